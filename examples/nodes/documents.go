package nodes

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/stepflow/stepflow/workflow"
)

// Document pipeline defaults and bounds.
const (
	DefaultSummaryWords = 12
	MaxSummaryWords     = 10000
	DefaultLanguage     = "en"
)

// Languages detect-language tells apart, in the order that breaks ties.
var Languages = []string{"en", "de", "fr"}

// stopWords are a few of each language's commonest words: enough for
// the example, far from a real language detector.
var stopWords = map[string][]string{
	"en": {"the", "and", "is", "of", "to", "in", "that", "it", "with", "for", "on", "this", "are", "was", "be"},
	"de": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "zu", "mit", "auf", "den", "dem", "von", "sich"},
	"fr": {"le", "la", "les", "et", "est", "un", "une", "des", "du", "pas", "que", "pour", "dans", "avec", "sur"},
}

var stopWordLanguage = func() map[string]string {
	m := map[string]string{}
	for lang, words := range stopWords {
		for _, w := range words {
			m[w] = lang
		}
	}
	return m
}()

// extractText normalises the whitespace of input.document:
// {text, words}.
func extractText(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	m, _ := object(workflow.Normalize(in.Input))
	doc, ok := m["document"].(string)
	if !ok {
		return workflow.NodeResult{}, fmt.Errorf("extract-text: input.document: required, a string, got %s", show(m["document"]))
	}
	words := strings.Fields(doc)
	return workflow.NodeResult{Output: map[string]any{
		"text":  strings.Join(words, " "),
		"words": float64(len(words)),
	}}, nil
}

// inputText reads input.text.
func inputText(node string, input any) (map[string]any, string, error) {
	m, _ := object(workflow.Normalize(input))
	text, ok := m["text"].(string)
	if !ok {
		return nil, "", fmt.Errorf("%s: input.text: required, a string, got %s", node, show(m["text"]))
	}
	return m, text, nil
}

// LanguageOf names the language of text among Languages by counting
// stop words; ties and texts without any go to the earlier language.
func LanguageOf(text string) string {
	counts := map[string]int{}
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) }) {
		if lang, ok := stopWordLanguage[w]; ok {
			counts[lang]++
		}
	}
	best := DefaultLanguage
	for _, lang := range Languages {
		if counts[lang] > counts[best] {
			best = lang
		}
	}
	return best
}

// detectLanguage tags input.text with its language: {text, language};
// the action is the language, so a blueprint branches on it.
func detectLanguage(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	_, text, err := inputText("detect-language", in.Input)
	if err != nil {
		return workflow.NodeResult{}, err
	}
	lang := LanguageOf(text)
	return workflow.NodeResult{Output: map[string]any{"text": text, "language": lang}, Action: lang}, nil
}

// summarize keeps the first params.words words (default 12) of
// input.text, marking a cut with "…": {summary, truncated}, plus
// input.language when there is one.
func summarize(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	n, err := optionalInt(in.Params, "words", DefaultSummaryWords, 1, MaxSummaryWords)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("summarize: params.%w", err)
	}
	m, text, err := inputText("summarize", in.Input)
	if err != nil {
		return workflow.NodeResult{}, err
	}
	words := strings.Fields(text)
	truncated := len(words) > n
	if truncated {
		words = words[:n]
	}
	summary := strings.Join(words, " ")
	if truncated {
		summary += " …"
	}
	out := map[string]any{"summary": summary, "truncated": truncated}
	if lang, ok := m["language"].(string); ok {
		out["language"] = lang
	}
	return workflow.NodeResult{Output: out}, nil
}

func checkSummarizeParams(p map[string]any) error {
	_, err := optionalInt(p, "words", DefaultSummaryWords, 1, MaxSummaryWords)
	return err
}

// translateStub pretends to translate input.text from input.language to
// params.target (default en) by prefixing "[de→en] ":
// {text, language: target, translatedFrom}. Text already in the target
// language passes unchanged.
func translateStub(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	target, err := oneOf(in.Params, "target", DefaultLanguage, Languages...)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("translate-stub: params.%w", err)
	}
	m, text, err := inputText("translate-stub", in.Input)
	if err != nil {
		return workflow.NodeResult{}, err
	}
	from, ok := m["language"].(string)
	if !ok || from == "" {
		return workflow.NodeResult{}, fmt.Errorf("translate-stub: input.language: required, a language code (the output of detect-language), got %s", show(m["language"]))
	}
	if from == target {
		return workflow.NodeResult{Output: map[string]any{"text": text, "language": target}}, nil
	}
	return workflow.NodeResult{Output: map[string]any{
		"text":           fmt.Sprintf("[%s→%s] %s", from, target, text),
		"language":       target,
		"translatedFrom": from,
	}}, nil
}

func checkTranslateStubParams(p map[string]any) error {
	_, err := oneOf(p, "target", DefaultLanguage, Languages...)
	return err
}

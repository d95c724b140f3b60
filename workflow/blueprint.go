package workflow

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Blueprint is a Flowcraft workflow blueprint.
type Blueprint struct {
	ID       string         `json:"id"`
	Metadata map[string]any `json:"metadata,omitempty"`
	Nodes    []Node         `json:"nodes"`
	Edges    []Edge         `json:"edges"`
}

// Node is one step of a blueprint.
type Node struct {
	ID     string         `json:"id"`
	Uses   string         `json:"uses"`
	Params map[string]any `json:"params,omitempty"`
	// Inputs is a string (one context key or node id) or a map of input
	// field → context key or node id (Flowcraft's resolution rules).
	Inputs *Inputs     `json:"inputs,omitempty"`
	Config *NodeConfig `json:"config,omitempty"`
	// SourceLocation is where Flowcraft's compiler found the node
	// ({file, line, column}); kept, never interpreted.
	SourceLocation map[string]any `json:"_sourceLocation,omitempty"`
}

// NodeConfig holds a node's runtime options. Durations are milliseconds.
type NodeConfig struct {
	// MaxRetries is the total number of attempts (Flowcraft's meaning);
	// unset or 0 means 1.
	MaxRetries *int `json:"maxRetries,omitempty"`
	// RetryDelay is the base delay in ms of exponential backoff with
	// jitter between attempts.
	RetryDelay *int64 `json:"retryDelay,omitempty"`
	// Timeout is the per-attempt time limit in ms.
	Timeout *int64 `json:"timeout,omitempty"`
	// Fallback names the node that runs in place of this one when its
	// attempts are exhausted.
	Fallback string `json:"fallback,omitempty"`
	// JoinStrategy is "all" (default) or "any".
	JoinStrategy string `json:"joinStrategy,omitempty"`
}

// Edge connects two nodes.
type Edge struct {
	Source    string `json:"source"`
	Target    string `json:"target"`
	Action    string `json:"action,omitempty"`
	Condition string `json:"condition,omitempty"`
	Transform string `json:"transform,omitempty"`
	// SourceLocation is where Flowcraft's compiler found the edge; kept,
	// never interpreted.
	SourceLocation map[string]any `json:"_sourceLocation,omitempty"`
}

// Inputs is a node's `inputs`: either a single key or a map.
type Inputs struct {
	Key string
	Map map[string]string
}

func (in Inputs) MarshalJSON() ([]byte, error) {
	if in.Map != nil {
		return json.Marshal(in.Map)
	}
	return json.Marshal(in.Key)
}

func (in *Inputs) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &in.Key)
	}
	in.Map = map[string]string{}
	return json.Unmarshal(b, &in.Map)
}

// MaxBlueprintBytes bounds the size of a blueprint document.
const MaxBlueprintBytes = 4 << 20

// DecodeError is a document Decode rejects: too large, malformed JSON, or
// not of the blueprint's shape; Path names the offending JSON location
// (e.g. nodes[2].config), empty when it is the whole document.
type DecodeError struct {
	Path string
	Msg  string
}

func (e *DecodeError) Error() string {
	if e.Path == "" {
		return "blueprint: " + e.Msg
	}
	return "blueprint: " + e.Path + ": " + e.Msg
}

// Decode parses a blueprint strictly: unknown fields and wrongly typed
// values are errors naming their JSON path.
func Decode(data []byte) (*Blueprint, error) {
	if len(data) > MaxBlueprintBytes {
		return nil, &DecodeError{Msg: fmt.Sprintf("document is %d bytes, more than the %d allowed", len(data), MaxBlueprintBytes)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, &DecodeError{Msg: "malformed JSON: " + err.Error()}
	}
	if dec.More() {
		return nil, &DecodeError{Msg: "malformed JSON: data after the top-level value"}
	}
	if err := checkShape(raw); err != nil {
		return nil, err
	}
	var bp Blueprint
	if err := json.Unmarshal(data, &bp); err != nil {
		// checkShape accepted it, so this is a value out of range.
		return nil, &DecodeError{Msg: err.Error()}
	}
	return &bp, nil
}

type kind int

const (
	kString kind = iota
	kInt
	kObject
	kAny
)

var (
	topFields    = map[string]kind{"id": kString, "metadata": kObject, "nodes": kAny, "edges": kAny}
	nodeFields   = map[string]kind{"id": kString, "uses": kString, "params": kObject, "inputs": kAny, "config": kAny, "_sourceLocation": kObject}
	configFields = map[string]kind{"maxRetries": kInt, "retryDelay": kInt, "timeout": kInt, "fallback": kString, "joinStrategy": kString}
	edgeFields   = map[string]kind{"source": kString, "target": kString, "action": kString, "condition": kString, "transform": kString, "_sourceLocation": kObject}
)

func checkShape(raw any) error {
	top, ok := raw.(map[string]any)
	if !ok {
		return &DecodeError{Msg: "expected a JSON object, got " + jsonType(raw)}
	}
	if err := checkFields("", top, topFields); err != nil {
		return err
	}
	for _, list := range []struct {
		name   string
		fields map[string]kind
	}{{"nodes", nodeFields}, {"edges", edgeFields}} {
		v, present := top[list.name]
		if !present || v == nil {
			continue
		}
		items, ok := v.([]any)
		if !ok {
			return &DecodeError{Path: list.name, Msg: "expected an array, got " + jsonType(v)}
		}
		for i, item := range items {
			path := fmt.Sprintf("%s[%d]", list.name, i)
			obj, ok := item.(map[string]any)
			if !ok {
				return &DecodeError{Path: path, Msg: "expected an object, got " + jsonType(item)}
			}
			if err := checkFields(path, obj, list.fields); err != nil {
				return err
			}
			if list.name != "nodes" {
				continue
			}
			if in, ok := obj["inputs"]; ok && in != nil {
				if err := checkInputs(path+".inputs", in); err != nil {
					return err
				}
			}
			if cfg, ok := obj["config"]; ok && cfg != nil {
				c, ok := cfg.(map[string]any)
				if !ok {
					return &DecodeError{Path: path + ".config", Msg: "expected an object, got " + jsonType(cfg)}
				}
				if err := checkFields(path+".config", c, configFields); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkInputs(path string, v any) error {
	switch in := v.(type) {
	case string:
		return nil
	case map[string]any:
		for k, val := range in {
			if _, ok := val.(string); !ok {
				return &DecodeError{Path: path + "." + k, Msg: "expected a string (a context key or node id), got " + jsonType(val)}
			}
		}
		return nil
	}
	return &DecodeError{Path: path, Msg: "expected a string or an object of strings, got " + jsonType(v)}
}

func checkFields(path string, obj map[string]any, fields map[string]kind) error {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := k
		if path != "" {
			p = path + "." + k
		}
		want, known := fields[k]
		if !known {
			return &DecodeError{Path: p, Msg: "unknown field (known: " + strings.Join(sortedKeys(fields), ", ") + ")"}
		}
		v := obj[k]
		if v == nil {
			continue
		}
		switch want {
		case kString:
			if _, ok := v.(string); !ok {
				return &DecodeError{Path: p, Msg: "expected a string, got " + jsonType(v)}
			}
		case kObject:
			if _, ok := v.(map[string]any); !ok {
				return &DecodeError{Path: p, Msg: "expected an object, got " + jsonType(v)}
			}
			if err := checkNumbers(p, v); err != nil {
				return err
			}
		case kInt:
			n, ok := v.(json.Number)
			if !ok {
				return &DecodeError{Path: p, Msg: "expected an integer, got " + jsonType(v)}
			}
			if _, err := n.Int64(); err != nil {
				return &DecodeError{Path: p, Msg: "expected an integer, got " + n.String()}
			}
		}
	}
	return nil
}

// checkNumbers finds numbers in free-form JSON (params, metadata) that do
// not fit a float64, which is how they are decoded.
func checkNumbers(path string, v any) error {
	switch v := v.(type) {
	case json.Number:
		if _, err := v.Float64(); err != nil {
			return &DecodeError{Path: path, Msg: "number " + v.String() + " is out of range"}
		}
	case map[string]any:
		for _, k := range sortedAnyKeys(v) {
			if err := checkNumbers(path+"."+k, v[k]); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := checkNumbers(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortedAnyKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeys(m map[string]kind) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// Digest is a stable content digest of the blueprint ("sha256:<hex>"): two
// blueprints with the same content have the same digest, whatever their
// key order or whitespace.
func (bp *Blueprint) Digest() string {
	b, err := json.Marshal(bp)
	if err != nil {
		// Only unmarshalable params (channels, funcs) set in Go can fail.
		b = []byte(fmt.Sprintf("%#v", bp))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Version is metadata.version as a string ("" when absent).
func (bp *Blueprint) Version() string {
	if bp.Metadata == nil {
		return ""
	}
	switch v := bp.Metadata["version"].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

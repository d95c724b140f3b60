package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// Error is an error answer: its status code and the JSON body
// {"error": Msg, "causes": [...]}.
type Error struct {
	Code   int     `json:"-"`
	Msg    string  `json:"error"`
	Causes []Cause `json:"causes,omitempty"`
}

// Cause is one problem of a request, at a JSON path of its body (as
// "blueprint.nodes[1].uses") or the name of a query parameter.
type Cause struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Msg }

func badRequest(format string, args ...any) *Error {
	return &Error{Code: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// fail answers err: an *Error as it is; the client's sentinels by their
// meaning; anything else 500 with its message (an operator's API: the
// message is what tells them PostgreSQL is down).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, client.ErrRunNotFound):
		e = &Error{Code: http.StatusNotFound, Msg: err.Error()}
	case errors.Is(err, client.ErrRunExists), errors.Is(err, client.ErrNotAwaiting):
		e = &Error{Code: http.StatusConflict, Msg: err.Error()}
	case errors.Is(err, client.ErrWebhookNotFound):
		e = &Error{Code: http.StatusNotFound, Msg: "no such webhook (the URL's run, node or token is not one a webhook node gave)"}
	case errors.Is(err, client.ErrWebhookUsed):
		e = &Error{Code: http.StatusGone, Msg: "this webhook resumed its run already: each webhook URL is used once"}
	case errors.Is(err, client.ErrInvalid):
		e = &Error{Code: http.StatusBadRequest, Msg: err.Error()}
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		return // the caller went away: nobody reads an answer
	default:
		e = &Error{Code: http.StatusInternalServerError, Msg: err.Error()}
		attrs := append([]slog.Attr{slog.String("method", r.Method), slog.String("path", logPath(r.URL.Path)), slog.Any("err", err)}, logAttrs(r)...)
		s.o.Logger.LogAttrs(r.Context(), slog.LevelError, "api request failed", attrs...)
	}
	writeJSON(w, e.Code, e)
}

// writeJSON answers v as JSON with code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		b, _ := json.Marshal(Error{Msg: "encode the answer: " + err.Error()})
		buf.Write(b)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// decodeBody reads r's body, at most MaxBodyBytes, as one JSON value into
// dst (a pointer to a struct: unknown fields are refused). An empty body leaves dst as
// it is when emptyOK.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, dst any, emptyOK bool) error {
	body, err := s.readBody(w, r)
	switch {
	case err != nil:
		return err
	case len(bytes.TrimSpace(body)) == 0:
		if emptyOK {
			return nil
		}
		return badRequest("empty request body: send a JSON object")
	}
	// encoding/json matches field names regardless of case ("runid" would
	// set RunID): check the names as sent first, exactly.
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil {
		return jsonError(body, err)
	}
	if dec.More() {
		return badRequest("malformed JSON: data after the top-level value")
	}
	known := jsonFields(dst)
	var causes []Cause
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(known, name) {
			causes = append(causes, Cause{Field: name, Message: "unknown field"})
		}
	}
	if len(causes) > 0 {
		return &Error{Code: http.StatusBadRequest, Msg: fmt.Sprintf("unknown field %q (this request takes %s)", causes[0].Field, strings.Join(known, ", ")), Causes: causes}
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return jsonError(body, err)
	}
	return nil
}

// readBody reads r's body, at most MaxBodyBytes (413 beyond, refused
// unread when its declared length is over), of a JSON content type (or
// none).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || !isJSON(mt) {
			return nil, &Error{Code: http.StatusUnsupportedMediaType, Msg: fmt.Sprintf("Content-Type %q: send application/json", ct)}
		}
	}
	tooLarge := &Error{Code: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body is larger than %d bytes (the server's --api-max-body-bytes)", s.o.MaxBodyBytes)}
	if r.ContentLength > s.o.MaxBodyBytes {
		return nil, tooLarge // without reading it
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes))
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &maxBytes):
		return nil, tooLarge
	case err != nil:
		return nil, badRequest("read the request body: %v", err)
	}
	return body, nil
}

// jsonFields lists the JSON names of the fields of the struct dst points
// to.
func jsonFields(dst any) []string {
	t := reflect.TypeOf(dst).Elem()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}

// jsonError says what encoding/json found wrong with body, with where.
func jsonError(body []byte, err error) *Error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		line, col := position(body, syntax.Offset)
		return badRequest("malformed JSON at line %d, column %d: %v", line, col, syntax)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: the body ends inside a value")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return badRequest("the body is a JSON %s: send a JSON object", typ.Value)
		}
		e := badRequest("%s: expected %s, got a JSON %s", field, jsonKindOf(typ.Type.Kind().String()), typ.Value)
		e.Causes = []Cause{{Field: field, Message: fmt.Sprintf("expected %s, got a JSON %s", jsonKindOf(typ.Type.Kind().String()), typ.Value)}}
		return e
	}
	return badRequest("malformed JSON: %v", err)
}

// position turns a byte offset into a 1-based line and column.
func position(body []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(body)))
	before := body[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, max(col-1, 1)
}

func jsonKindOf(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "int", "int64", "float64":
		return "a number"
	}
	return goKind
}

// invalidBlueprint is the answer to a blueprint that does not validate
// (nil for another error): each problem a cause, at its JSON path in the
// request when the blueprint was inline (where is "blueprint"), under
// blueprintId when it was named.
func invalidBlueprint(where string, err error) *Error {
	var verr *workflow.ValidationError
	if !errors.Is(err, client.ErrInvalid) || !errors.As(err, &verr) {
		return nil
	}
	e := &Error{Code: http.StatusBadRequest}
	var msgs []string
	for _, p := range verr.Problems {
		c := Cause{Field: where, Message: p.String()}
		if where == "blueprint" {
			c.Message = p.Msg
			if p.Path != "" {
				c.Field += "." + p.Path
			}
		}
		e.Causes = append(e.Causes, c)
		msgs = append(msgs, c.Field+": "+c.Message)
	}
	e.Msg = fmt.Sprintf("blueprint %q is invalid: %s", verr.BlueprintID, strings.Join(msgs, "; "))
	return e
}

// requestNote is what a handler notes for the request log.
type requestNote struct{ runID string }

type noteKey struct{}

// noted returns r's note (an empty one outside the request log).
func noted(r *http.Request) *requestNote {
	if n, ok := r.Context().Value(noteKey{}).(*requestNote); ok {
		return n
	}
	return &requestNote{}
}

// logAttrs are the request log's attributes from r's note.
func logAttrs(r *http.Request) []slog.Attr {
	id := noted(r).runID
	if id == "" {
		id = r.PathValue("id")
	}
	if id == "" {
		return nil
	}
	return []slog.Attr{slog.String("run_id", id)}
}

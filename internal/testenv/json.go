package testenv

import (
	"encoding/json"
	"reflect"
	"testing"
)

// AssertJSON fails the test (not at once) unless got and want are the same
// JSON document: both are encoded and decoded again, so a map and a struct,
// or an int and a float64, of the same JSON compare equal. A want that is
// JSON text is a json.RawMessage (json.RawMessage(`{"n":1}`)); a string
// want is a JSON string.
func AssertJSON(t testing.TB, what string, got, want any) {
	t.Helper()
	g, err := asJSON(got)
	if err != nil {
		t.Fatalf("%s: encode what we got: %v", what, err)
	}
	w, err := asJSON(want)
	if err != nil {
		t.Fatalf("%s: bad expectation: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		t.Errorf("%s:\n got %s\nwant %s", what, gb, wb)
	}
}

// asJSON is v as encoding/json decodes its encoding: maps, slices,
// float64s, strings, bools and nil.
func asJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}

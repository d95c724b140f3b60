package nodes

import (
	"encoding/json"
	"fmt"
	"math"
)

// Params and inputs arrive in their JSON-decoded form (float64, string,
// map[string]any, []any), or as json.Number or Go integers when a caller
// builds them in Go; these helpers accept all of them and name the field
// in every error.

// maxExactInt is the largest integer a float64 holds exactly.
const maxExactInt = 1 << 53

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, !math.IsNaN(n) && !math.IsInf(n, 0)
	case float32:
		return number(float64(n))
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func wholeNumber(v any) (int, bool) {
	f, ok := number(v)
	if !ok || f != math.Trunc(f) || math.Abs(f) > maxExactInt {
		return 0, false
	}
	return int(f), true
}

// requiredInt reads params[name], a whole number in [lo, hi].
func requiredInt(p map[string]any, name string, lo, hi int) (int, error) {
	v, ok := p[name]
	if !ok || v == nil {
		return 0, fmt.Errorf("%s: required, a whole number between %d and %d", name, lo, hi)
	}
	return intValue(name, v, lo, hi)
}

// optionalInt reads params[name] like requiredInt, def when absent.
func optionalInt(p map[string]any, name string, def, lo, hi int) (int, error) {
	v, ok := p[name]
	if !ok || v == nil {
		return def, nil
	}
	return intValue(name, v, lo, hi)
}

func intValue(name string, v any, lo, hi int) (int, error) {
	n, ok := wholeNumber(v)
	if !ok || n < lo || n > hi {
		return 0, fmt.Errorf("%s: must be a whole number between %d and %d, got %s", name, lo, hi, show(v))
	}
	return n, nil
}

// optionalNumber reads params[name], a number >= lo, def when absent.
func optionalNumber(p map[string]any, name string, def, lo float64) (float64, error) {
	v, ok := p[name]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := number(v)
	if !ok || f < lo {
		return 0, fmt.Errorf("%s: must be a number >= %g, got %s", name, lo, show(v))
	}
	return f, nil
}

// optionalString reads params[name], a non-empty string, def when absent.
func optionalString(p map[string]any, name, def string) (string, error) {
	v, ok := p[name]
	if !ok || v == nil {
		return def, nil
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", fmt.Errorf("%s: must be a non-empty string, got %s", name, show(v))
	}
	return s, nil
}

// oneOf reads params[name] like optionalString and requires it to be one
// of allowed.
func oneOf(p map[string]any, name, def string, allowed ...string) (string, error) {
	s, err := optionalString(p, name, def)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", fmt.Errorf("%s: must be one of %q, got %q", name, allowed, s)
}

// object returns v as a JSON object.
func object(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	return m, ok
}

// show renders a value for an error message.
func show(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("%q", v)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprintf("%v", v)
}

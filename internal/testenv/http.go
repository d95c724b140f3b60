package testenv

import (
	"io"
	"net/http"
	"testing"
)

// HTTPGet is the status and body that GET url answers; the test fails at
// once when nothing answers.
func HTTPGet(t testing.TB, url string) (status int, body string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stepflow/stepflow/workflow"
)

// Example decodes the blueprint examples/<name>.json of the repository
// (name may name a subfolder: "subflows/pricing"), for tests of any
// package: the repository is found from the working directory up to its
// go.mod.
func Example(t testing.TB, name string) *workflow.Blueprint {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory: not in the repository")
		}
		dir = parent
	}
	data, err := os.ReadFile(filepath.Join(dir, "examples", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := workflow.Decode(data)
	if err != nil {
		t.Fatalf("examples/%s.json: %v", name, err)
	}
	return bp
}

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
)

// stepflowBin is the stepflow binary TestMain builds once for every test.
var stepflowBin string

// defaultParallel: cases run two at a time unless -test.parallel says
// otherwise. Measured on the 2-core machine with shared services: all at
// once overloaded them (runs needed more than 90 s, and the reconciler's
// 3 s threshold made it republish thousands of duplicates); one at a time
// took 89 s, two 59 s, three 56 s but with the slowest case doubling.
const defaultParallel = 2

func TestMain(m *testing.M) {
	testenv.SetDefaultParallel(defaultParallel)
	if testing.Short() {
		// Every case skips itself (setup): no binary needed.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "stepflow-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bin, err := buildStepflow(dir)
		if prebuilt := os.Getenv("FAULTS_STEPFLOW_BIN"); prebuilt != "" {
			// A binary built elsewhere (a diagnostic build, say).
			bin, err = prebuilt, nil
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		stepflowBin = bin
		code := m.Run()
		sharedPool.Close()
		return code
	}()
	os.Exit(code)
}

// buildStepflow builds ./cmd/stepflow of the module this package is in.
func buildStepflow(dir string) (string, error) {
	root := ".."
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
			root = filepath.Dir(mod)
		}
	}
	bin := filepath.Join(dir, "stepflow")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/stepflow")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/stepflow in %s: %v\n%s", root, err, out)
	}
	fmt.Fprintf(os.Stderr, "faults: built %s in %s\n", bin, time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// The real services (testenv.PostgresURL, testenv.RabbitMQURL and, for
// Redis, an address: the cases choose the database). The processes under
// test reach them through per-test proxies; the tests' own clients talk to
// them directly.
var redisAddr = func() string {
	if v := os.Getenv("FAULTS_REDIS_ADDR"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}()

// sharedPool serves the tests' own queries (each test has its own tables).
var sharedPool = &testenv.SharedPool{MaxConns: 8}

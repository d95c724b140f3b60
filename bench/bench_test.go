package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requiredKeys are the figures every run must report (issue 6), as paths
// into the JSON file.
var requiredKeys = []string{
	"W.steps_per_s", "W.runs_per_s",
	"W.step_latency_ms.p50", "W.step_latency_ms.p95", "W.step_latency_ms.p99",
	"C.single_run_ms.p50", "C.single_run_ms.p90", "C.steps_per_s",
	"L.growth_ratio",
	"B.items_per_s", "B.gather_delay_ms", "B.worker_items_per_s",
	"R.resume_to_next_done_ms.p50", "R.resume_to_next_done_ms.p90", "R.api_call_ms.p50",
	"baselines.amqp_msgs_per_s", "baselines.pg_tx_per_s", "baselines.redis_ops_per_s", "baselines.http_req_per_s",
	"rss_mb.bridge", "rss_mb.function", "cpu_s.bridge", "cpu_s.function",
	"machine.cores", "config.n", "config.prefetch", "config.concurrency", "config.batch_size", "config.pg_conns",
}

// TestQuick runs the benchmark in smoke mode against the real services and
// checks that the JSON file has every figure, positive. Every run it
// starts is verified by the benchmark itself (a wrong result fails run).
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark against the real services; skipped with -short")
	}
	cfg := defaultConfig()
	cfg.applyQuick(nil)
	cfg.JSONPath = filepath.Join(t.TempDir(), "bench.json")
	root, err := findRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cfg.RepoRoot = root
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	res, err := run(ctx, cfg, &log)
	if err != nil {
		t.Fatalf("bench --quick: %v\n%s", err, log.String())
	}
	if res.W.Runs != 50 || res.C.Batch.Runs != 50 || res.C.Runs != 10 || res.L.Nodes != 60 || res.R.Runs != 20 || res.B.Items != 200 {
		t.Errorf("quick sizes: W %d runs, C %d batch runs and %d single runs, L %d nodes, R %d resumes, B %d items; want 50, 50, 10, 60, 20, 200",
			res.W.Runs, res.C.Batch.Runs, res.C.Runs, res.L.Nodes, res.R.Runs, res.B.Items)
	}
	b, err := os.ReadFile(cfg.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	for _, key := range requiredKeys {
		var v any = doc
		for _, part := range strings.Split(key, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		switch x := v.(type) {
		case float64:
			if x <= 0 {
				t.Errorf("%s = %v, want > 0", key, x)
			}
		case nil:
			t.Errorf("%s missing from the JSON", key)
		default:
			t.Errorf("%s = %v (%T), want a number", key, x, x)
		}
	}
	for _, key := range []string{"machine.cpu_model", "machine.go_version", "machine.date"} {
		parts := strings.Split(key, ".")
		if s, _ := doc[parts[0]].(map[string]any)[parts[1]].(string); s == "" {
			t.Errorf("%s missing from the JSON", key)
		}
	}
	if t.Failed() {
		t.Logf("progress:\n%s", log.String())
	}
}

// --function picks the route measured; func needs the func CLI, and says
// where make func-check puts it.
func TestCheckFunction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exe := filepath.Join(dir, "func")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		function, bin, wantErr string
	}{
		{functionStepflow, "", ""},
		{functionFunc, exe, ""},
		{functionFunc, filepath.Join(dir, "missing"), "make func-check"},
		{functionFunc, dir, "make func-check"},
		{"knative", exe, "want stepflow or func"},
	} {
		c := defaultConfig()
		c.Function, c.FuncBin = tt.function, tt.bin
		err := c.checkFunction()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("--function %s --func-bin %s: %v", tt.function, tt.bin, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("--function %s --func-bin %s: %v, want an error with %q", tt.function, tt.bin, err, tt.wantErr)
		}
	}
	if c := defaultConfig(); c.Function != functionStepflow || (os.Getenv("FUNC_BIN") == "" && !strings.HasSuffix(c.FuncBin, filepath.Join("stepflow", "func-v0.50.1", "func"))) {
		t.Errorf("defaults: --function %s --func-bin %s", c.Function, c.FuncBin)
	}
}

// --workloads picks the parts to run by name, and refuses an unknown one,
// naming it and the names it takes.
func TestParseWorkloads(t *testing.T) {
	t.Parallel()
	got, err := parseWorkloads("B, W")
	if err != nil || len(got) != 2 || !got["B"] || !got["W"] {
		t.Errorf(`parseWorkloads("B, W") = %v, %v; want B and W`, got, err)
	}
	if got := selectedWorkloads(allWorkloads()); strings.Join(got, ",") != "baselines,C,L,W,B,R" {
		t.Errorf("every workload in order: %v", got)
	}
	for _, bad := range []string{"X", "B,,W", ""} {
		if _, err := parseWorkloads(bad); err == nil || !strings.Contains(err.Error(), "is no workload") || !strings.Contains(err.Error(), "baselines, C, L, W, B, R") {
			t.Errorf("parseWorkloads(%q): %v, want an error naming the bad name and the workloads", bad, err)
		}
	}
}

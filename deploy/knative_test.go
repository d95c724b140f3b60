package deploy

import (
	"regexp"
	"strconv"
	"testing"
)

// func.yaml (what `func deploy` makes of the repository root) and the
// stepflow image's Knative Service serve the same function with the same
// handler, so they are sized alike: many requests per instance
// (containerConcurrency), autoscaling on requests in flight with the same
// target, and the same bounds. func.yaml's invoke: http is what makes the
// func build serve the step function's own handler (docs/knative.md).
func TestFuncYAMLSizedAsTheKnativeService(t *testing.T) {
	spec := "func.yaml"
	ksvc := "deploy/knative/function-service.yaml"
	num := func(file, pattern string) int {
		t.Helper()
		n, err := strconv.Atoi(one(t, file, pattern))
		if err != nil {
			t.Fatalf("%s: %s: %v", file, pattern, err)
		}
		return n
	}
	if got := one(t, spec, `(?m)^invoke: (\S+)`); got != "http" {
		t.Errorf("func.yaml invoke: %s, want http (the instanced-http scaffolding)", got)
	}
	cc := num(ksvc, `(?m)^\s+containerConcurrency: (\d+)`)
	if got := num(spec, `(?m)^\s+concurrency: (\d+)`); got != cc || cc < 2 {
		t.Errorf("func.yaml limits.concurrency %d, Knative Service containerConcurrency %d: want the same, above 1", got, cc)
	}
	if got, want := one(t, spec, `(?m)^\s+metric: (\S+)`), one(t, ksvc, `autoscaling\.knative\.dev/metric: (\S+)`); got != "concurrency" || want != "concurrency" {
		t.Errorf("autoscaling metric: func.yaml %s, Knative Service %s, want concurrency for both", got, want)
	}
	for _, k := range []struct{ spec, ksvc string }{{"target", "target"}, {"min", "min-scale"}, {"max", "max-scale"}} {
		got := num(spec, `(?m)^\s+`+k.spec+`: (\d+)`)
		want := num(ksvc, `autoscaling\.knative\.dev/`+regexp.QuoteMeta(k.ksvc)+`: "(\d+)"`)
		if got != want {
			t.Errorf("func.yaml scale.%s %d, Knative Service %s %d: want the same", k.spec, got, k.ksvc, want)
		}
	}
	if target := num(spec, `(?m)^\s+target: (\d+)`); target > cc {
		t.Errorf("scale.target %d above the hard limit %d", target, cc)
	}
	for _, a := range []string{"scrape", "port", "path"} {
		if got, want := one(t, spec, `prometheus\.io/`+a+`: (\S+)`), one(t, ksvc, `prometheus\.io/`+a+`: (\S+)`); got != want {
			t.Errorf("prometheus.io/%s: func.yaml %s, Knative Service %s", a, got, want)
		}
	}
}

package deploy

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// rendered is one document of `kubectl kustomize` output.
type rendered struct{ kind, name, namespace, text string }

// kustomize renders deploy/<dir> with kubectl's built-in kustomize, as
// `kubectl apply -k` would, and splits it into documents.
func kustomize(t *testing.T, dir string) []rendered {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("the deployment tests render the kustomizations with kubectl, which is not on PATH (.ci/run checks for it): %v", err)
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "deploy", dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy/%s: %v\n%s", dir, err, out)
	}
	var docs []rendered
	for _, doc := range strings.Split(string(out), "\n---\n") {
		d := rendered{text: doc}
		d.kind = field(doc, `(?m)^kind: (\S+)`)
		d.name = field(doc, `(?m)^metadata:\n(?:  .*\n)*?  name: (\S+)`)
		d.namespace = field(doc, `(?m)^metadata:\n(?:  .*\n)*?  namespace: (\S+)`)
		docs = append(docs, d)
	}
	return docs
}

func field(text, pattern string) string {
	if m := regexp.MustCompile(pattern).FindStringSubmatch(text); m != nil {
		return strings.Trim(m[1], `"`)
	}
	return ""
}

func find(docs []rendered, kind, name string) (rendered, bool) {
	for _, d := range docs {
		if d.kind == kind && d.name == name {
			return d, true
		}
	}
	return rendered{}, false
}

// Both kustomizations render, and put everything namespaced in the
// stepflow namespace.
func TestKustomizationsRender(t *testing.T) {
	for _, dir := range []string{"kubernetes", "knative"} {
		t.Run(dir, func(t *testing.T) {
			docs := kustomize(t, dir)
			if len(docs) < 6 {
				t.Fatalf("deploy/%s renders %d documents", dir, len(docs))
			}
			for _, d := range docs {
				if d.kind == "" || d.name == "" {
					t.Errorf("a document without kind or name:\n%s", d.text)
				}
				if d.kind != "Namespace" && d.namespace != "stepflow" {
					t.Errorf("%s %s is in namespace %q, want stepflow", d.kind, d.name, d.namespace)
				}
			}
		})
	}
}

// deploy/kubernetes scales the bridge on the queue's length (KEDA, with
// the bridge's own RabbitMQ URL) and the function on CPU (an HPA within
// PostgreSQL's connections); the reconciler stays one.
func TestAutoscaling(t *testing.T) {
	docs := kustomize(t, "kubernetes")
	get := func(kind, name string) string {
		t.Helper()
		d, ok := find(docs, kind, name)
		if !ok {
			t.Fatalf("deploy/kubernetes renders no %s %s", kind, name)
		}
		return d.text
	}
	config := get("ConfigMap", "stepflow-config")
	secret := get("Secret", "stepflow-secrets")

	so := get("ScaledObject", "stepflow-bridge")
	if got := field(so, `(?m)^    kind: (\S+)\n    name: (?:\S+)`); got != "Deployment" {
		t.Errorf("ScaledObject scales a %q, want the bridge's Deployment", got)
	}
	if got := field(so, `(?m)^  scaleTargetRef:\n(?:    .*\n)*?    name: (\S+)`); got != "stepflow-bridge" {
		t.Errorf("ScaledObject scales %q, want stepflow-bridge", got)
	}
	get("Deployment", "stepflow-bridge")
	// kustomize writes keys in order: a trigger is "- authenticationRef:
	// … metadata: … type:".
	if got := field(so, `(?m)^  triggers:\n(?:  .*\n)*?    type: (\S+)`); got != "rabbitmq" {
		t.Errorf("ScaledObject trigger %q, want rabbitmq", got)
	}
	if q, want := field(so, `(?m)^      queueName: (\S+)`), field(config, `(?m)^  STEPFLOW_QUEUE: (\S+)`); q == "" || q != want {
		t.Errorf("ScaledObject watches queue %q, the bridges consume STEPFLOW_QUEUE %q", q, want)
	}
	if n, _ := strconv.Atoi(field(so, `(?m)^  minReplicaCount: (\d+)`)); n < 2 {
		t.Errorf("ScaledObject minReplicaCount %d: keep two bridges, one may be paused or restarting", n)
	}
	auth := field(so, `(?m)^  - authenticationRef:\n      name: (\S+)`)
	ta := get("TriggerAuthentication", auth)
	if name, key := field(ta, `(?m)^    name: (\S+)`), field(ta, `(?m)^  - key: (\S+)`); name != "stepflow-secrets" || key != "RABBITMQ_URL" {
		t.Errorf("TriggerAuthentication %s reads %s/%s, want stepflow-secrets/RABBITMQ_URL", auth, name, key)
	}
	if field(ta, `(?m)^    parameter: (\S+)`) != "host" {
		t.Errorf("TriggerAuthentication %s does not give the rabbitmq trigger its host (the AMQP URL)", auth)
	}
	if field(secret, `(?m)^  (RABBITMQ_URL): `) == "" {
		t.Errorf("the Secret has no RABBITMQ_URL for KEDA")
	}

	hpa := get("HorizontalPodAutoscaler", "stepflow-function")
	if got := field(hpa, `(?m)^  scaleTargetRef:\n(?:    .*\n)*?    name: (\S+)`); got != "stepflow-function" {
		t.Errorf("HPA scales %q, want stepflow-function", got)
	}
	get("Deployment", "stepflow-function")
	maxReplicas, _ := strconv.Atoi(field(hpa, `(?m)^  maxReplicas: (\d+)`))
	conns, _ := strconv.Atoi(field(config, `(?m)^  POSTGRES_MAX_CONNS: "?(\d+)`))
	// PostgreSQL's default max_connections, less the reconciler's, a
	// client's and migrate's pools (4 each).
	if budget := 100 - 3*4; maxReplicas*conns > budget || maxReplicas < 2 {
		t.Errorf("HPA maxReplicas %d × POSTGRES_MAX_CONNS %d = %d PostgreSQL connections; keep it within %d (and at least 2 replicas)", maxReplicas, conns, maxReplicas*conns, budget)
	}

	// The autoscalers own the replica counts: a Deployment that set one
	// would be put back to it by every apply.
	for _, name := range []string{"stepflow-bridge", "stepflow-function"} {
		if r := field(get("Deployment", name), `(?m)^  replicas: (\d+)`); r != "" {
			t.Errorf("Deployment %s sets replicas: %s; leave it to its autoscaler", name, r)
		}
	}
	if r := field(get("Deployment", "stepflow-reconciler"), `(?m)^  replicas: (\d+)`); r != "1" {
		t.Errorf("the reconciler has %s replicas; one is enough (more are safe, not needed)", r)
	}
}

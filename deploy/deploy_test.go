// Package deploy holds stepflow's deployment files (Kubernetes, Knative);
// its tests keep them, compose.yaml, the Dockerfile and
// docs/configuration.md in step with the binary: every environment variable
// they set is one the binary reads, with a value it parses; every command
// they run exists; every setting the binary reads is documented.
//
// The checks read the files as text (the module has no YAML dependency);
// scripts/compose-check.sh validates compose.yaml with docker-compose.
package deploy

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/api"
)

const root = ".."

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goSources returns the non-test Go files of the binary's packages.
func goSources(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{"cmd/stepflow", "function", "bridge", "reconciler", "client", "api", "schema", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			out[p] = string(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

var (
	envDoc      = regexp.MustCompile(`\(env ([A-Z][A-Z0-9_]*)\)`)
	envGetenv   = regexp.MustCompile(`(?:Getenv|LookupEnv)\("([A-Z][A-Z0-9_]*)"\)`)
	envMap      = regexp.MustCompile(`\bm\["([A-Z][A-Z0-9_]*)"\]`)
	envDuration = regexp.MustCompile(`durationEnv\("([A-Z][A-Z0-9_]*)"`)
	envInt      = regexp.MustCompile(`intEnv\("([A-Z][A-Z0-9_]*)"`)
	flagDef     = regexp.MustCompile(`\.(?:String|Int|Bool|Duration)(?:Var)?P?\((?:&[\w.]+, )?"([a-z][a-z0-9-]*)"`)
	cmdUse      = regexp.MustCompile(`Use:\s+"([a-z][a-z-]*)`)
)

type binary struct {
	env       map[string]bool // every variable the binary reads
	durations map[string]bool
	ints      map[string]bool
	flags     map[string]bool
	commands  map[string]bool
}

var (
	binaryOnce sync.Once
	binaryInfo binary
)

// readBinary scans the sources once per test binary.
func readBinary(t *testing.T) binary {
	t.Helper()
	binaryOnce.Do(func() { binaryInfo = scanBinary(t) })
	if binaryInfo.env == nil {
		t.FailNow()
	}
	return binaryInfo
}

func scanBinary(t *testing.T) binary {
	t.Helper()
	b := binary{env: map[string]bool{}, durations: map[string]bool{}, ints: map[string]bool{}, flags: map[string]bool{}, commands: map[string]bool{}}
	collect := func(re *regexp.Regexp, src string, into ...map[string]bool) {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			for _, set := range into {
				set[m[1]] = true
			}
		}
	}
	for p, src := range goSources(t) {
		collect(envDoc, src, b.env)
		collect(envGetenv, src, b.env)
		collect(envDuration, src, b.env, b.durations)
		collect(envInt, src, b.env, b.ints)
		if strings.HasSuffix(p, filepath.Join("function", "config.go")) {
			collect(envMap, src, b.env)
		}
		if strings.Contains(p, filepath.Join("cmd", "stepflow")) {
			collect(flagDef, src, b.flags)
			collect(cmdUse, src, b.commands)
		}
	}
	// Read by func-go / the step function config as durations and ints.
	b.durations["STEP_TIMEOUT"] = true
	b.ints["POSTGRES_MAX_CONNS"] = true
	if len(b.env) < 20 || len(b.commands) < 10 {
		t.Fatalf("found only %d variables and %d commands in the sources: the patterns no longer match", len(b.env), len(b.commands))
	}
	return b
}

// Variables of the third-party images in compose.yaml.
var thirdParty = map[string]bool{
	"POSTGRES_USER": true, "POSTGRES_PASSWORD": true, "POSTGRES_DB": true, "POSTGRES_HOST_AUTH_METHOD": true,
	"RABBITMQ_DEFAULT_USER": true, "RABBITMQ_DEFAULT_PASS": true,
}

type setting struct{ file, name, value string }

var (
	k8sEnvName  = regexp.MustCompile(`(?m)^\s*- name: ([A-Z][A-Z0-9_]*)\s*\n\s*value: "?([^"\n]*)"?\s*$`)
	k8sDataKey  = regexp.MustCompile(`(?m)^  ([A-Z][A-Z0-9_]*): "?([^"\n]*)"?\s*$`)
	composeKey  = regexp.MustCompile(`(?m)^\s+([A-Z][A-Z0-9_]*): "?([^"\n]*)"?\s*$`)
	k8sArgs     = regexp.MustCompile(`(?m)^\s*args: \["([^"]+)"`)
	composeCmd  = regexp.MustCompile(`<<: \*stepflow\n\s+command: \["([^"]+)"`) // stepflow services only
	deployFiles = []string{"compose.yaml"}
)

func manifests(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "*", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests under deploy/: %v", err)
	}
	var rel []string
	for _, f := range files {
		r, _ := filepath.Rel(root, f)
		rel = append(rel, r)
	}
	return rel
}

// settings returns every environment variable the deployment files set.
func settings(t *testing.T) []setting {
	t.Helper()
	var out []setting
	for _, f := range append(manifests(t), deployFiles...) {
		src := read(t, f)
		res := []*regexp.Regexp{k8sEnvName, k8sDataKey}
		if f == "compose.yaml" {
			res = []*regexp.Regexp{composeKey}
		}
		for _, re := range res {
			for _, m := range re.FindAllStringSubmatch(src, -1) {
				out = append(out, setting{f, m[1], strings.TrimSpace(m[2])})
			}
		}
	}
	if len(out) < 30 {
		t.Fatalf("found only %d settings in the deployment files: the patterns no longer match", len(out))
	}
	return out
}

func TestDeploymentSetsOnlyVariablesTheBinaryReads(t *testing.T) {
	b := readBinary(t)
	for _, s := range settings(t) {
		if !b.env[s.name] && !thirdParty[s.name] {
			t.Errorf("%s sets %s, which stepflow does not read (misspelt?)", s.file, s.name)
			continue
		}
		// The binary ignores a malformed number or duration in a variable
		// and uses the default, so check the values here.
		if b.durations[s.name] {
			if d, err := time.ParseDuration(s.value); err != nil || d <= 0 {
				t.Errorf("%s: %s=%q is not a positive duration", s.file, s.name, s.value)
			}
		}
		if b.ints[s.name] {
			if n, err := strconv.Atoi(s.value); err != nil || n <= 0 {
				t.Errorf("%s: %s=%q is not a positive integer", s.file, s.name, s.value)
			}
		}
	}
}

func TestDeploymentRunsRealCommands(t *testing.T) {
	b := readBinary(t)
	n := 0
	for _, f := range append(manifests(t), deployFiles...) {
		re := k8sArgs
		if f == "compose.yaml" {
			re = composeCmd
		}
		for _, m := range re.FindAllStringSubmatch(read(t, f), -1) {
			n++
			if cmd := m[1]; !b.commands[cmd] && cmd != "--help" {
				t.Errorf("%s runs stepflow %q, which is not a command", f, cmd)
			}
		}
	}
	if n < 10 {
		t.Fatalf("found only %d commands in the deployment files", n)
	}
}

func TestConfigurationDocCoversEverySetting(t *testing.T) {
	b := readBinary(t)
	doc := read(t, "docs/configuration.md")
	var missing []string
	for name := range b.env {
		if !strings.Contains(doc, "`"+name+"`") {
			missing = append(missing, name)
		}
	}
	for name := range b.flags {
		if !strings.Contains(doc, "`--"+name+"`") {
			missing = append(missing, "--"+name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/configuration.md lacks %s: add a row per setting (see `stepflow <command> --help`)", strings.Join(missing, ", "))
	}
}

// The Knative and plain Kubernetes directories share these files verbatim.
func TestSharedManifestsAreIdentical(t *testing.T) {
	for _, f := range []string{"namespace.yaml", "config.yaml", "migrate-job.yaml", "reconciler-cronjob.yaml", "api.yaml"} {
		if a, b := read(t, "deploy/kubernetes/"+f), read(t, "deploy/knative/"+f); a != b {
			t.Errorf("deploy/kubernetes/%s and deploy/knative/%s differ: keep them the same", f, f)
		}
	}
}

func one(t *testing.T, file, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(read(t, file))
	if m == nil {
		t.Fatalf("%s: no match for %s", file, pattern)
	}
	return m[1]
}

func TestBridgesPointAtTheFunction(t *testing.T) {
	ns := one(t, "deploy/knative/kustomization.yaml", `(?m)^namespace: (\S+)`)
	ksvc := one(t, "deploy/knative/function-service.yaml", `(?m)^metadata:\n  name: (\S+)`)
	if got, want := one(t, "deploy/knative/bridge.yaml", `FUNCTION_URL\n\s+value: (\S+)`), "http://"+ksvc+"."+ns+".svc.cluster.local/"; got != want {
		t.Errorf("knative bridge FUNCTION_URL = %s, want the Knative Service's cluster-local URL %s", got, want)
	}
	svc := one(t, "deploy/kubernetes/function.yaml", `(?m)^kind: Service\nmetadata:\n  name: (\S+)`)
	port := one(t, "deploy/kubernetes/function.yaml", `(?m)^    - name: http\n      port: (\d+)`)
	if got, want := one(t, "deploy/kubernetes/bridge.yaml", `FUNCTION_URL\n\s+value: (\S+)`), "http://"+svc+":"+port+"/"; got != want {
		t.Errorf("kubernetes bridge FUNCTION_URL = %s, want the function Service %s", got, want)
	}
	if got := one(t, "compose.yaml", `FUNCTION_URL: (\S+)`); got != "http://function:8080/" {
		t.Errorf("compose bridge FUNCTION_URL = %s, want http://function:8080/", got)
	}
}

// STEP_TIMEOUT < BRIDGE_REQUEST_TIMEOUT < Knative timeoutSeconds: the inner
// limit fires first, so a slow node is a node error, not a transport retry.
func TestTimeoutsNest(t *testing.T) {
	d := func(file, name string) time.Duration {
		v, err := time.ParseDuration(one(t, file, `(?m)^\s+`+name+`: (\S+)`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, f := range []string{"deploy/kubernetes/config.yaml", "compose.yaml"} {
		if step, req := d(f, "STEP_TIMEOUT"), d(f, "BRIDGE_REQUEST_TIMEOUT"); step >= req {
			t.Errorf("%s: STEP_TIMEOUT %s must be below BRIDGE_REQUEST_TIMEOUT %s", f, step, req)
		}
	}
	secs, _ := strconv.Atoi(one(t, "deploy/knative/function-service.yaml", `timeoutSeconds: (\d+)`))
	if req := d("deploy/knative/config.yaml", "BRIDGE_REQUEST_TIMEOUT"); time.Duration(secs)*time.Second <= req {
		t.Errorf("Knative timeoutSeconds %d must be above BRIDGE_REQUEST_TIMEOUT %s", secs, req)
	}
}

// The image must hold the binary `make build` makes.
func TestDockerfileBuildsWithMake(t *testing.T) {
	df := read(t, "Dockerfile")
	stages := regexp.MustCompile(`(?m)^FROM `).Split(df, -1)
	if len(stages) < 3 {
		t.Fatalf("Dockerfile: want a build stage and a final stage, got %d stages", len(stages)-1)
	}
	build, final := stages[1], stages[len(stages)-1]
	if !regexp.MustCompile(`^golang:\S+ AS build\n`).MatchString(build) {
		t.Errorf("Dockerfile: the first stage is not FROM golang:<version> AS build")
	}
	if !regexp.MustCompile(`(?m)^RUN make build\b`).MatchString(build) {
		t.Errorf("Dockerfile: the build stage does not RUN make build")
	}
	if !strings.Contains(read(t, "Makefile"), "\nbuild:") {
		t.Errorf("Makefile: no build target")
	}
	for _, want := range []string{"COPY --from=build /src/bin/stepflow ", "USER 65532", `ENTRYPOINT ["/usr/local/bin/stepflow"]`, "EXPOSE 8080 9091 9092"} {
		if !strings.Contains(final, want) {
			t.Errorf("Dockerfile final stage lacks %q", want)
		}
	}
}

// The HTTP API runs everywhere the other parts do: `stepflow api` on every
// interface of its container, so with its token from a Secret (without one
// it would refuse to start), probed on its own port, behind a Service.
func TestAPIIsDeployed(t *testing.T) {
	const k8s = "deploy/kubernetes/api.yaml" // deploy/knative/api.yaml is the same file
	for _, dir := range []string{"kubernetes", "knative"} {
		if !regexp.MustCompile(`(?m)^  - api\.yaml$`).MatchString(read(t, "deploy/"+dir+"/kustomization.yaml")) {
			t.Errorf("deploy/%s/kustomization.yaml does not apply api.yaml", dir)
		}
	}
	if got := one(t, k8s, `(?m)^\s*args: \["([^"]+)"\]`); got != "api" {
		t.Errorf("%s runs stepflow %s, want api", k8s, got)
	}
	address := one(t, k8s, `API_ADDRESS\n\s+value: (\S+)`)
	_, port, err := net.SplitHostPort(address)
	if err != nil || !strings.HasPrefix(address, "0.0.0.0:") {
		t.Errorf("%s: API_ADDRESS %s, want 0.0.0.0:PORT (reachable by the Service)", k8s, address)
	}
	if got := one(t, k8s, `(?m)^\s+- name: http\n\s+containerPort: (\d+)`); got != port {
		t.Errorf("%s: containerPort %s, API_ADDRESS port %s", k8s, got, port)
	}
	for probe, path := range map[string]string{"readinessProbe": "/health/readiness", "livenessProbe": "/health/liveness"} {
		if !regexp.MustCompile(probe + `:\n\s+httpGet:\n\s+path: ` + regexp.QuoteMeta(path) + `\n\s+port: http\n`).MatchString(read(t, k8s)) {
			t.Errorf("%s: no %s on %s of port http", k8s, probe, path)
		}
	}
	if got := one(t, k8s, `(?m)^kind: Service\n(?:.*\n)*?    - name: http\n      port: (\d+)\n      targetPort: http`); got != port {
		t.Errorf("%s: Service port %s, want %s", k8s, got, port)
	}
	// The token comes from the Secret of the same file, whose placeholder
	// the API refuses: a deployment that forgot to set it does not start.
	secret := one(t, k8s, `STEPFLOW_API_TOKEN\n\s+valueFrom:\n\s+secretKeyRef:\n\s+name: (\S+)\n\s+key: STEPFLOW_API_TOKEN`)
	if got := one(t, k8s, `(?m)^kind: Secret\nmetadata:\n  name: (\S+)`); got != secret {
		t.Errorf("%s: the token is read from Secret %s, the file defines %s", k8s, secret, got)
	}
	placeholder := one(t, k8s, `(?m)^  STEPFLOW_API_TOKEN: (\S+)`)
	if err := (&api.Options{Address: address, Token: placeholder}).Validate(); err == nil {
		t.Errorf("%s: the API accepts the placeholder token %q: it would run with a token everyone can read here", k8s, placeholder)
	}
	if err := (&api.Options{Address: address}).Validate(); err == nil {
		t.Errorf("%s: the API would start on %s without a token", k8s, address)
	}

	// compose: the same, with a default token that does work.
	service := one(t, "compose.yaml", `(?m)^  api:\n((?:    .*\n|\n)+)`)
	if !strings.Contains(service, `command: ["api"]`) {
		t.Errorf("compose.yaml's api service does not run stepflow api")
	}
	cAddress := one(t, "compose.yaml", `(?m)^      API_ADDRESS: (\S+)`)
	_, cPort, _ := net.SplitHostPort(cAddress)
	if !strings.Contains(service, ":"+cPort+`"`) {
		t.Errorf("compose.yaml: the api service publishes no port %s (API_ADDRESS %s)", cPort, cAddress)
	}
	m := regexp.MustCompile(`STEPFLOW_API_TOKEN: \$\{STEPFLOW_API_TOKEN:-(\S+)\}`).FindStringSubmatch(service)
	if m == nil {
		t.Fatalf("compose.yaml: the api service sets no STEPFLOW_API_TOKEN (with a default)")
	}
	if err := (&api.Options{Address: cAddress, Token: m[1]}).Validate(); err != nil {
		t.Errorf("compose.yaml: the api service would not start: %v", err)
	}
}

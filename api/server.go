package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/console"
	"github.com/stepflow/stepflow/workflow"
)

// Defaults of Options.
const (
	DefaultAddress         = "127.0.0.1:8088"
	DefaultMaxBodyBytes    = 1 << 20
	DefaultShutdownTimeout = 15 * time.Second
)

// MinTokenLength is the shortest API token Options.Validate accepts.
const MinTokenLength = 16

// Options configure a Server.
type Options struct {
	// Address is where the server listens (Serve's caller opens it); it is
	// checked by Validate: an address that is not loopback needs a Token.
	Address string
	// Token, when set, is required as "Authorization: Bearer <Token>" by
	// every write (POST); reads and probes stay open.
	Token string
	// PublicURL is the server's base URL as its clients reach it: the
	// Location of a started run is absolute under it. (Webhook URLs are
	// built by the step function, on its STEPFLOW_PUBLIC_URL: the same
	// base.) "" gives a Location path.
	PublicURL string
	// MaxBodyBytes bounds a request body; a larger one is refused with
	// 413. 0: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Blueprints are the blueprints POST /runs may name by blueprintId,
	// by id, looked up before the snapshots stored by earlier runs.
	Blueprints map[string]*workflow.Blueprint
	// Registry receives the server's metrics and is what /metrics serves;
	// nil: a registry of its own.
	Registry *prometheus.Registry
	// Routes, when set, adds handlers (profiles, say) to the server's mux;
	// they are served without the API token.
	Routes func(mux *http.ServeMux)
	// ShutdownTimeout bounds how long Serve lets requests in flight finish
	// once its context ends. 0: DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Validate checks the options, naming the setting that is wrong.
func (o *Options) Validate() error {
	host, _, err := net.SplitHostPort(o.Address)
	if err != nil {
		return fmt.Errorf("--api-address %q: %w", o.Address, err)
	}
	if o.Token != "" && (len(o.Token) < MinTokenLength || strings.ContainsAny(o.Token, " \t\r\n")) {
		return fmt.Errorf("STEPFLOW_API_TOKEN: want at least %d characters without spaces (e.g. openssl rand -hex 32), got %d", MinTokenLength, len(o.Token))
	}
	if o.Token == "" && !isLoopback(host) {
		return fmt.Errorf("--api-address %s is not a loopback address and STEPFLOW_API_TOKEN is not set: anyone who reaches it could start and cancel runs; set STEPFLOW_API_TOKEN (writes then need Authorization: Bearer <token>), or listen on 127.0.0.1", o.Address)
	}
	if o.PublicURL != "" {
		u, err := url.Parse(o.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("--public-url %q: want an absolute http or https URL without query or fragment", o.PublicURL)
		}
	}
	if o.MaxBodyBytes < 0 {
		return fmt.Errorf("--api-max-body-bytes %d: must be positive", o.MaxBodyBytes)
	}
	return nil
}

// isLoopback reports whether host (of a listen address) accepts only
// connections from this machine; "" (every interface) does not.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// access says who may call a route.
type access int

const (
	open     access = iota // reads and probes: anyone who reaches the server
	write                  // changes something: the API token, when one is set
	ownToken               // carries its own credential (webhooks): never the API token
)

// Server serves the API. It is an http.Handler; Serve runs it on a
// listener with a graceful drain.
type Server struct {
	o       Options
	client  *client.Client
	mux     *http.ServeMux
	obs     *observer
	token   [sha256.Size]byte
	noRoute http.Handler
}

// New returns a Server working through c; it registers the metrics.
func New(c *client.Client, o Options) (*Server, error) {
	if c == nil {
		return nil, errors.New("api: a client is required")
	}
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.PublicURL = strings.TrimSuffix(o.PublicURL, "/")
	obs, err := newObserver(o.Registry, o.Logger)
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, client: c, mux: http.NewServeMux(), obs: obs, token: sha256.Sum256([]byte(o.Token))}
	s.noRoute = obs.instrument("unmatched", http.HandlerFunc(s.unmatched))
	s.routeRuns()
	s.routeDeadLetters()
	s.routeWebhooks()
	s.routeHealth()
	// The console's pages are reads; their buttons call the API's writes.
	con, err := console.New(c, console.Options{TokenRequired: o.Token != "", Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	for _, rt := range con.Routes() {
		s.mux.Handle(rt.Pattern, s.obs.instrument(rt.Pattern, rt.Handler))
	}
	if o.Routes != nil {
		o.Routes(s.mux)
	}
	return s, nil
}

// handle registers h for pattern ("METHOD /path"), behind the access rule,
// the metrics and the request log.
func (s *Server) handle(pattern string, acc access, h func(http.ResponseWriter, *http.Request) error) {
	serve := func(w http.ResponseWriter, r *http.Request) {
		if acc == write && s.o.Token != "" {
			if err := s.authorize(r); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="stepflow"`)
				s.fail(w, r, err)
				return
			}
		}
		if acc == write && s.o.Token == "" {
			if err := sameOriginWrite(r); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	}
	s.mux.Handle(pattern, s.obs.instrument(pattern, http.HandlerFunc(serve)))
}

// authorize checks the bearer token in constant time (over digests, so
// not even the length shows).
func (s *Server) authorize(r *http.Request) error {
	scheme, given, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return &Error{Code: http.StatusUnauthorized, Msg: "this request needs Authorization: Bearer <token> (the server's STEPFLOW_API_TOKEN)"}
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(given)))
	if subtle.ConstantTimeCompare(sum[:], s.token[:]) != 1 {
		return &Error{Code: http.StatusUnauthorized, Msg: "the bearer token is not the server's STEPFLOW_API_TOKEN"}
	}
	return nil
}

// crossOrigin is net/http's cross-site request check: Sec-Fetch-Site, or
// where a browser sends none, Origin against Host.
var crossOrigin = http.NewCrossOriginProtection()

// sameOriginWrite refuses a write, on a server without an API token, that
// a page of another origin could have made the user's browser send. Such
// a page may send a "simple" POST without asking the server first (no
// CORS preflight): bodyless, a form, or text/plain, with the user's access
// to the loopback address. It cannot send Content-Type: application/json
// without a preflight, which this server answers with no CORS grant, so
// the browser never sends the write itself. So a write needs:
//
//   - no sign of another origin: Sec-Fetch-Site same-origin or none, or
//     without it an Origin, if any, that is this server (403 otherwise);
//   - and a JSON Content-Type, unless Sec-Fetch-Site or Origin shows it
//     comes from a page of this server (415 otherwise).
//
// With a token none of this is needed: a browser does not add the
// Authorization header to a request of another page by itself.
func sameOriginWrite(r *http.Request) error {
	if err := crossOrigin.Check(r); err != nil {
		site, origin := r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Origin")
		return &Error{Code: http.StatusForbidden, Msg: fmt.Sprintf("cross-origin write refused (Sec-Fetch-Site %q, Origin %q, Host %q): without STEPFLOW_API_TOKEN this server takes writes from its own pages and from clients that are not browsers only", site, origin, r.Host)}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && isJSON(mt) {
		return nil
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site == "same-origin" || (site == "" && r.Header.Get("Origin") != "") {
		return nil // crossOrigin.Check matched the Origin with Host
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "none"
	} else {
		ct = strconv.Quote(ct)
	}
	return &Error{Code: http.StatusUnsupportedMediaType, Msg: fmt.Sprintf("Content-Type %s: a write to this server (no STEPFLOW_API_TOKEN) needs Content-Type: application/json, with or without a body, so that no page of another origin can send it (curl: -H 'Content-Type: application/json')", ct)}
}

// isJSON reports whether the media type mt is JSON: application/json or a
// +json type.
func isJSON(mt string) bool { return mt == "application/json" || strings.HasSuffix(mt, "+json") }

// ServeHTTP routes r; a request no route takes gets a JSON 404 or 405.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// unmatched answers what the mux answers for a request no route takes (404,
// 405 with Allow, a redirect to the cleaned path) with a JSON error body.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	rec := &headerRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.code {
	case http.StatusNotFound:
		s.fail(w, r, &Error{Code: http.StatusNotFound, Msg: fmt.Sprintf("no such endpoint: %s %s (see docs/api.md)", r.Method, r.URL.Path)})
	case http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		s.fail(w, r, &Error{Code: http.StatusMethodNotAllowed, Msg: fmt.Sprintf("method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow)})
	default:
		for k, v := range rec.header {
			if k != "Content-Type" && k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.code)
	}
}

// headerRecorder keeps the status and headers a handler writes, not its
// body.
type headerRecorder struct {
	header http.Header
	code   int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) WriteHeader(code int) {
	if h.code == 0 {
		h.code = code
	}
}
func (h *headerRecorder) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return len(b), nil
}

// Serve serves the API on ln until ctx ends, then stops taking requests,
// lets those in flight finish within ShutdownTimeout (the drain on SIGTERM)
// and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.o.Logger.Handler(), slog.LevelWarn),
	}
	s.o.Logger.Info("api listening", "address", ln.Addr().String(), "token", s.o.Token != "", "public_url", s.o.PublicURL)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	s.o.Logger.Info("api draining", "timeout", s.o.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.o.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	s.o.Logger.Info("api stopped")
	return err
}

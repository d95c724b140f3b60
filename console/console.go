package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"

	"github.com/stepflow/stepflow/client"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Options configure a Console.
type Options struct {
	// TokenRequired says that the API's writes need its bearer token: the
	// pages' write buttons then ask for it before they send anything.
	TokenRequired bool
	Logger        *slog.Logger
}

// Console serves the pages. Routes lists its handlers for the server that
// mounts it.
type Console struct {
	o       Options
	client  *client.Client
	pages   map[string]*template.Template // by page template name
	assets  http.Handler
	version string // of the assets, for their URLs
}

// Route is one of the console's handlers, with its ServeMux pattern.
type Route struct {
	Pattern string
	Handler http.Handler
}

// New returns a Console reading through c.
func New(c *client.Client, o Options) (*Console, error) {
	if c == nil {
		return nil, errors.New("console: a client is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	con := &Console{o: o, client: c, pages: map[string]*template.Template{}}
	sum := sha256.New()
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(p)
		sum.Write(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	con.version = hex.EncodeToString(sum.Sum(nil))[:12]
	base, err := template.New("base").Funcs(con.funcs()).ParseFS(templateFS, "templates/base.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	for _, page := range []string{"runs", "run", "deadletters", "error"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("console templates: %w", err)
		}
		con.pages[page] = t
	}
	sub, _ := fs.Sub(assetFS, "assets")
	files := http.FileServerFS(sub)
	con.assets = http.StripPrefix("/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The URLs carry the assets' version: a new binary, new URLs.
		if r.URL.Query().Get("v") == con.version {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	return con, nil
}

// Routes are the console's handlers. Patterns match GET (and so HEAD)
// only; paths they do not take are the server's to answer.
func (c *Console) Routes() []Route {
	return []Route{
		{"GET /{$}", c.page(c.runs)},
		{"GET /fragments/runs", c.fragment(c.runs)},
		{"GET /runs/{id}", c.page(c.run)},
		{"GET /fragments/runs/{id}", c.fragment(c.run)},
		{"GET /dead-letters", c.page(c.deadLetters)},
		{"GET /assets/", c.assets},
	}
}

// view is what a handler renders: a page template and its data.
type view struct {
	page string // runs, run, deadletters
	data any
}

// chrome is what every page's layout needs; each page's data embeds it.
type chrome struct {
	Title         string
	Nav           string // runs, dead-letters
	TokenRequired bool
	Assets        string // the assets' version
}

func (c *Console) chrome(title, nav string) chrome {
	return chrome{Title: title, Nav: nav, TokenRequired: c.o.TokenRequired, Assets: c.version}
}

// page serves a whole page; fragment the live part of the same page
// (its template "live"), which the script polls.
func (c *Console) page(h func(*http.Request) (view, error)) http.Handler {
	return c.serve(h, "page")
}

func (c *Console) fragment(h func(*http.Request) (view, error)) http.Handler {
	return c.serve(h, "live")
}

// redirect is an error that sends the browser elsewhere (a search that
// found one run).
type redirect string

func (r redirect) Error() string { return "see " + string(r) }

// pageError is an error shown as a page with its status code.
type pageError struct {
	code int
	msg  string
}

func (e *pageError) Error() string { return e.msg }

func (c *Console) serve(h func(*http.Request) (view, error), tmpl string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := h(r)
		var to redirect
		if errors.As(err, &to) {
			http.Redirect(w, r, string(to), http.StatusSeeOther)
			return
		}
		code := http.StatusOK
		if err != nil {
			code, v = c.errorView(r, err)
			tmpl = "page"
		}
		var buf bytes.Buffer
		if err := c.pages[v.page].ExecuteTemplate(&buf, tmpl, v.data); err != nil {
			c.o.Logger.Error("console: render", "path", r.URL.Path, "err", err)
			http.Error(w, "render the page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		// Nothing inline runs: whatever a blueprint or an output holds
		// that escaping missed still could not execute.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_, _ = w.Write(buf.Bytes())
	})
}

type errorPage struct {
	chrome
	Code    int
	Status  string
	Message string
}

func (c *Console) errorView(r *http.Request, err error) (int, view) {
	var pe *pageError
	code := http.StatusInternalServerError
	switch {
	case errors.As(err, &pe):
		code = pe.code
	case errors.Is(err, client.ErrRunNotFound):
		code = http.StatusNotFound
	case errors.Is(err, client.ErrInvalid):
		code = http.StatusBadRequest
	default:
		c.o.Logger.Error("console: request failed", "path", r.URL.Path, "err", err)
	}
	return code, view{page: "error", data: errorPage{chrome: c.chrome(http.StatusText(code), ""), Code: code, Status: http.StatusText(code), Message: err.Error()}}
}

// runPath is the console's URL of a run.
func runPath(id string) string { return "/runs/" + url.PathEscape(id) }

// assetPath is an asset's URL, with the assets' version.
func (c *Console) assetPath(name string) string {
	return path.Join("/assets", name) + "?v=" + c.version
}

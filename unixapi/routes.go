package unixapi

import (
	"net/http"
	"slices"
)

// routeMux is the server's ServeMux that remembers every pattern
// registered on it, however it was registered, so that tests can tell
// which endpoints exist (see Server.Routes).
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func newRouteMux() *routeMux { return &routeMux{ServeMux: http.NewServeMux()} }

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.ServeMux.Handle(pattern, h)
	m.patterns = append(m.patterns, pattern)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.ServeMux.HandleFunc(pattern, h)
	m.patterns = append(m.patterns, pattern)
}

// Routes returns the patterns the server serves, such as
// "GET /v1/secrets/{id}", sorted.
func (s *Server) Routes() []string {
	out := slices.Clone(s.mux.patterns)
	slices.Sort(out)
	return out
}

package client_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeShowsTheExample: the Go code of the README's "Go client"
// section is Example's, line for line in the same order, so the README
// shows code that compiles.
func TestReadmeShowsTheExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Go client\n")
	if !ok {
		t.Fatal(`README.md has no "## Go client" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal(`the "Go client" section has no Go code`)
	}
	block, _, _ = strings.Cut(block, "```")
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	rest := string(example)
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		i := strings.Index(rest, line)
		if i < 0 {
			t.Fatalf("README line %q is not in example_test.go (or not in its order)", line)
		}
		rest = rest[i+len(line):]
	}
}

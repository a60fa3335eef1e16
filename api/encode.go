package api

import (
	"bytes"
	"encoding/json"
)

// EncodeRequest is a request body as a client sends it: JSON without HTML
// escaping (json.Marshal writes '<', '>' and '&' as six-byte escapes, which
// would count against the daemon's body limit six times over), written in
// one piece to one buffer, so that clearing the result leaves no other
// copy of it behind in this function.
func EncodeRequest(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

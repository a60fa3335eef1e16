package audit

import (
	"fmt"
	"strings"
)

// Describe says what an event records in words, for a log's MESSAGE:
//
//	secret 01a2b3c4… rotated to version 3 by uid 1000
//	credential 9f1e22aa… revoked by uid 0 with credential 5c0ffee1…
//	authorize denied for credential 5c0ffee1… by uid 1000: no access rule allows it
//
// It names things by their ids only (shortened to eight characters: the
// structured fields carry them whole), never by a name: display names,
// unit and credential names, delivery names, service paths and reasons
// given by callers stay out of it. Every word in it is either fixed here,
// an id, a number, a key label of coffer's own, or an error code.
func Describe(e Event) string {
	var b strings.Builder
	noun, verb, _ := strings.Cut(e.Action, ".")
	what, key, done := strings.ReplaceAll(noun, "_", " "), noun, pastTense(verb)
	if p, ok := phrases[e.Action]; ok {
		what, key, done = p.what, p.key, p.done
	}
	switch {
	case e.Action == "":
		b.WriteString("audit event")
	case e.Outcome == OutcomeDenied || e.Outcome == OutcomeFailed:
		// What was asked, and that it did not happen.
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(e.Action, ".", " "), "_", " "))
		if id := subjectOf(noun, e.Target); id != "" {
			b.WriteString(" " + id)
		}
		b.WriteString(" " + e.Outcome)
	default:
		b.WriteString(what)
		if id := subjectOf(key, e.Target); id != "" {
			b.WriteString(" " + id)
		}
		b.WriteString(" " + done)
		if e.Action == "oauth2.introspect" && e.Target["active"] == "false" {
			b.WriteString(" (inactive)")
		}
	}
	if v := e.Target["version"]; v != "" && isNumber(v) && e.Outcome == OutcomeOK {
		b.WriteString(" to version " + v)
	}
	// What else it is about, by id.
	for _, k := range []string{"secret", "credential", "session", "user", "project"} {
		if k == noun || k == key {
			continue
		}
		if id := e.Target[k]; id != "" && looksLikeID(id) {
			b.WriteString(" " + forWord(k) + " " + k + " " + short(id))
		}
	}
	if by := describePrincipal(e.Principal); by != "" {
		b.WriteString(" by " + by)
	}
	if e.Count > 0 {
		fmt.Fprintf(&b, " (%d more like it)", e.Count)
	}
	switch e.Outcome {
	case OutcomeDenied, OutcomeFailed:
		if e.Code != "" && isWord(e.Code) {
			b.WriteString(": " + e.Code)
		}
	}
	return b.String()
}

// subjectOf is the id of the thing the action is about (the target keyed
// by the action's noun), shortened; "" when it has none.
func subjectOf(noun string, t map[string]string) string {
	if id := t[noun]; noun != "" && id != "" && looksLikeID(id) {
		return short(id)
	}
	return ""
}

// forWord joins a related id to the sentence.
func forWord(k string) string {
	switch k {
	case "project":
		return "in"
	case "user":
		return "for"
	}
	return "of"
}

// phrases say the actions whose name is no noun.verb of a resource.
var phrases = map[string]struct{ what, key, done string }{
	"authorize":         {"authorization", "", "allowed"},
	"deliver":           {"secret", "secret", "delivered"},
	"loadcredential":    {"secret", "secret", "delivered to systemd (LoadCredential=)"},
	"oauth2.token":      {"access token", "session", "issued"},
	"oauth2.introspect": {"token", "", "introspected"},
	"auth.login":        {"session", "session", "opened by login"},
}

var pastTenses = map[string]string{
	"create": "created", "rotate": "rotated", "revoke": "revoked", "delete": "deleted", "update": "updated",
	"grant": "granted", "restore": "restored", "backup": "backed up", "migrate": "migrated", "sweep": "swept",
	"remove": "removed", "destroy": "destroyed", "record": "recorded", "policies": "policies changed",
	"last_used": "use recorded", "reload": "reloaded", "start": "started", "stop": "stopped", "import": "imported",
	"lost": "events lost", "dropped": "events dropped", "pruned": "file pruned", "recovered": "torn last line removed",
	"discontinuity": "discontinuity found",
}

// pastTense says that verb happened.
func pastTense(verb string) string {
	if p, ok := pastTenses[verb]; ok {
		return p
	}
	if verb == "" {
		return "done"
	}
	return strings.ReplaceAll(verb, "_", " ") + " done"
}

// describePrincipal names who did it: the transport's identity and the
// credential of a presented token, by id.
func describePrincipal(p *Principal) string {
	if p == nil {
		return ""
	}
	var who string
	switch {
	case p.UID != nil:
		who = fmt.Sprintf("uid %d", *p.UID)
	case p.CID != nil:
		who = fmt.Sprintf("vsock cid %d", *p.CID)
	case p.VM != "":
		who = "vm " + p.VM // the operator's configured VM name, not tenant data
	case p.Channel == "daemon":
		who = "the daemon"
	case p.Channel == "loadcredential":
		who = "systemd"
	case p.Channel != "":
		who = "an anonymous " + p.Channel + " caller"
	}
	if p.Credential != "" && looksLikeID(p.Credential) {
		if who != "" {
			who += " with "
		}
		who += "credential " + short(p.Credential)
	} else if isTokenID(p.TokenID) {
		if who != "" {
			who += " with "
		}
		who += "token " + p.TokenID
	}
	return who
}

// short is the first eight characters of an id and an ellipsis.
func short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:8] + "…"
}

// looksLikeID: hex digits and dashes (UUIDs, coffer's token ids), so a
// name that ended up under an id's key never reaches a message.
func looksLikeID(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

func isNumber(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != "" && len(s) < 20
}

// isWord: an error code (lower case and underscores).
func isWord(s string) bool {
	for i := 0; i < len(s); i++ {
		if !('a' <= s[i] && s[i] <= 'z' || s[i] == '_') {
			return false
		}
	}
	return s != "" && len(s) <= 40
}

// isTokenID: a token's public id, "cfa_" and 22 base-62 characters.
func isTokenID(s string) bool {
	if len(s) != 4+22 || !strings.HasPrefix(s, "cf") || s[3] != '_' {
		return false
	}
	for i := 4; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

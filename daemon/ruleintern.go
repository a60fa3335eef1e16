package daemon

import (
	"strconv"
	"strings"
	"sync"
)

// ruleSets interns compiled rule sets and the role and policy lists of
// sessions. The tokens of one credential, and the credentials an operator
// issues from one template, carry the same rules: a bearer-cache entry then
// shares one compiled set instead of compiling and holding its own (which
// was most of an entry's size, and a compilation per cache miss).
// Compiled sets are immutable, so sharing them is safe.
type ruleSets struct {
	mu    sync.Mutex
	sets  map[string]*RuleSet
	lists map[string][]string
}

// ruleSetsSize bounds each map; a full map is emptied (sets in use stay
// alive through the entries that hold them).
const ruleSetsSize = 4096

// compile returns the compiled set of rs, shared with every earlier call
// with equal rules.
func (c *ruleSets) compile(rs []AccessRule) (*RuleSet, error) {
	if rs == nil {
		return nil, nil
	}
	var b strings.Builder
	for _, r := range rs {
		internKey(&b, r.ID)
		internKey(&b, r.Service)
		internKey(&b, r.Method)
		internKey(&b, r.Path)
	}
	k := b.String()
	c.mu.Lock()
	set, ok := c.sets[k]
	c.mu.Unlock()
	if ok {
		return set, nil
	}
	set, err := CompileRules(rs)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil || len(c.sets) >= ruleSetsSize {
		c.sets = make(map[string]*RuleSet)
	}
	c.sets[k] = set
	return set, nil
}

// list returns a slice equal to l, shared with every earlier call with an
// equal list. Callers must not modify it.
func (c *ruleSets) list(l []string) []string {
	if l == nil {
		return nil
	}
	var b strings.Builder
	b.WriteByte('[') // an empty list is not nil
	for _, v := range l {
		internKey(&b, v)
	}
	k := b.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.lists[k]; ok {
		return s
	}
	if c.lists == nil || len(c.lists) >= ruleSetsSize {
		c.lists = make(map[string][]string)
	}
	c.lists[k] = l
	return l
}

// internKey appends v to b so that different sequences of values never
// give the same key: each value is prefixed by its length.
func internKey(b *strings.Builder, v string) {
	b.WriteString(strconv.Itoa(len(v)))
	b.WriteByte(':')
	b.WriteString(v)
}

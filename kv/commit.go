package kv

import "slices"

// Commit says which tables a commit wrote records of, for caches that
// hold what the store held: Changed are the tables where an existing
// record was replaced or deleted (a cache of such records may be stale),
// Created those where a record was added that did not exist (a cache of
// found records is not: it cannot hold one). Index entries follow their
// records and are not listed. Both are sorted, without duplicates.
type Commit struct {
	Changed []string
	Created []string
}

// Touched reports whether c changed a record of table, or created one when
// created is true.
func (c Commit) Touched(table string, created bool) bool {
	if _, ok := slices.BinarySearch(c.Changed, table); ok {
		return true
	}
	if !created {
		return false
	}
	_, ok := slices.BinarySearch(c.Created, table)
	return ok
}

func (c *Commit) merge(o Commit) {
	for _, t := range o.Changed {
		c.Changed = addTable(c.Changed, t)
	}
	for _, t := range o.Created {
		c.Created = addTable(c.Created, t)
	}
}

// addTable adds table to the sorted set ts.
func addTable(ts []string, table string) []string {
	i, ok := slices.BinarySearch(ts, table)
	if ok {
		return ts
	}
	return slices.Insert(ts, i, table)
}

// OnCommit has fn called after every commit that wrote records, with the
// tables it wrote, before any Update of that commit returns: a cache told
// by fn is never behind a write its reader has seen acknowledged. fn runs
// on the committer goroutine: it must be quick and must not call Update.
// Set it before the first Update; it is not safe to change concurrently.
func (s *Store) OnCommit(fn func(Commit)) { s.onCommit = fn }

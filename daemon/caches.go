package daemon

import "github.com/coffer-hsm/coffer/kv"

// What each of the daemon's caches holds, and so which committed writes
// end it. The store tells committed (kv.Store.OnCommit) which tables every
// commit wrote before the writers' Updates return; nothing else bumps a
// generation, so no writer can forget to.
//
//   - bearer cache, shared identity records (idcache.go), a token's cached
//     project and role in Authorize: users, roles, credentials, sessions,
//     projects and tokens. Only a record that existed and was replaced or
//     deleted can make a cached entry stale (only found records are kept;
//     ids are never reused), so new sessions and tokens — every login —
//     end nothing. Usage counters live in their own table
//     (tableCredentialUse) for that reason.
//   - secret cache: secrets replaced or deleted.
//   - compiled policies: policies replaced or deleted.
//   - status counts: any record of a counted table added or removed.
//   - watched deliveries (watch.go) are woken, to read again, by secrets,
//     bindings, policies and the identity tables replaced or deleted.
//   - delivery record caches (recordcache.go) are keyed by the stored
//     bytes and need nothing.
var (
	identityTables = []string{tableUsers, tableRoles, tableCredentials, tableSessions, tableProjects, tableTokens}
	countedTables  = []string{tableProjects, tableSecrets, tableUsers, tableCredentials}
)

// committed is the store's commit hook: it ends what a commit made stale.
func (s *Service) committed(c kv.Commit) {
	for _, t := range identityTables {
		if c.Touched(t, false) {
			s.idGen.Add(1)
			break
		}
	}
	if c.Touched(tableSecrets, false) {
		s.secGen.Add(1)
	}
	if c.Touched(tablePolicies, false) {
		s.polGen.Add(1)
	}
	for _, t := range countedTables {
		if c.Touched(t, true) {
			s.probe.dirty.Store(true)
			break
		}
	}
	// Deliveries waiting for a new version read again (watch.go).
	s.wakeWatchers(c)
}

package daemon

// IsSystemAdminPeer tells whether a Unix socket peer with these
// credentials (SO_PEERCRED) is a system admin: the same decision as for its
// requests without a token. The API socket keeps a few connection slots
// for such peers.
func (s *Service) IsSystemAdminPeer(uid, gid uint32) bool {
	return s.isSystemAdmin(Principal{Channel: ChannelUnix, HasCred: true, UID: uid, GID: gid})
}

// Package systemd is the glue between coffer and the systemd service manager:
// the sockets systemd passes at activation (Activated), readiness, status and
// watchdog notifications (Notifier), the identity of a LoadCredential= client
// (CredentialPeer), and whether stderr goes to the journal (JournalStream).
//
// Everything here degrades to a no-op outside systemd, so the daemon calls it
// unconditionally. The unit files that go with this code live next to it:
// coffer.service, coffer.socket, coffer-creds.socket and coffer-vsock.socket.
//
// The package depends on go-systemd, mdlayher/vsock and x/sys only; it knows
// nothing of the daemon or the HTTP API.
package systemd

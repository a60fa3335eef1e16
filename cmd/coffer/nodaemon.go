//go:build nodaemon

package main

import "github.com/urfave/cli/v2"

// Built with the tag nodaemon, this is coffer-client: every client command
// of coffer, without the daemon and what only its host does (backup and
// restore of its store, store checks), and so without cgo, Badger or the
// PKCS#11 library: CGO_ENABLED=0 makes it static, for VM guests and
// containers. The commands it leaves out are still known, hidden, and say
// so, rather than "unknown command".

const notInThisBuildWhy = "not in this build (coffer-client, built without the daemon): use coffer on the daemon's host"

var (
	daemonCommand  = notInThisBuild("daemon")
	backupCommand  = notInThisBuild("backup")
	restoreCommand = notInThisBuild("restore")
	storeCommand   = notInThisBuild("store")
)

func notInThisBuild(name string) *cli.Command {
	return &cli.Command{
		Name:            name,
		Usage:           notInThisBuildWhy,
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(*cli.Context) error {
			return usagef("'coffer %s' is %s", name, notInThisBuildWhy)
		},
	}
}

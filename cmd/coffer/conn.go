package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

// globals are the connection settings as given on the command line and in
// the environment, captured once by the app's Before (a leaf command such as
// login may define its own --token, which hides the global one).
type globals struct {
	socket       string // --socket or $COFFER_SOCKET (the flag wins)
	socketSet    bool   // false: the built-in default
	token        string // --token
	tokenFile    string // --token-file
	tokenEnv     string // $COFFER_TOKEN
	tokenFileEnv string // $COFFER_TOKEN_FILE
	profile      string // --profile or $COFFER_PROFILE
	vsock        string // --vsock CID:PORT: talk to the daemon over vsock
	noToken      bool   // the command brings its own credentials
}

const globalsKey = "coffer.globals"

func captureGlobals(c *cli.Context) {
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[globalsKey] = globals{
		socket:       c.String("socket"),
		socketSet:    c.IsSet("socket"),
		token:        c.String("token"),
		tokenFile:    c.String("token-file"),
		tokenEnv:     os.Getenv("COFFER_TOKEN"),
		tokenFileEnv: os.Getenv("COFFER_TOKEN_FILE"),
		profile:      c.String("profile"),
		vsock:        c.String("vsock"),
	}
}

func globalsOf(c *cli.Context) globals {
	g, _ := c.App.Metadata[globalsKey].(globals)
	return g
}

// conn is where and as whom the CLI talks to the daemon.
type conn struct {
	socket  string
	token   string // never printed
	profile string // the profile that supplied a setting, if any
}

// resolveConn applies the precedence, per setting: explicit flag >
// environment > the --profile/$COFFER_PROFILE profile > the current profile
// of the config file (unless the socket is explicit) > built-in default. The config file is read only when a
// profile can matter. stdin serves a token file named "-".
func resolveConn(g globals, cfgPath string, stdin io.Reader) (conn, error) {
	if g.token != "" && g.tokenFile != "" && !g.noToken {
		return conn{}, usagef("--token and --token-file do not go together")
	}
	out := conn{socket: defaultSocket}
	if g.socketSet {
		out.socket = g.socket
	}
	if g.noToken {
		g.token, g.tokenFile, g.tokenEnv, g.tokenFileEnv = "", "", "", ""
	}
	// A named profile always applies; the current profile only when the
	// socket is not given explicitly (an explicit socket names another
	// daemon, whose token the current profile does not hold).
	var prof *profile
	if g.profile != "" || !g.socketSet {
		cfg, err := loadConfig(cfgPath)
		if err != nil {
			return conn{}, err
		}
		name := g.profile
		if name == "" {
			name = cfg.Current
		}
		if name != "" {
			p, ok := cfg.Profiles[name]
			switch {
			case !ok && g.profile != "":
				return conn{}, usagef("no profile %q in %s", name, cfgPath)
			case !ok:
				return conn{}, fmt.Errorf("the current profile %q in %s does not exist: run 'coffer profile use NAME'", name, cfgPath)
			}
			prof, out.profile = &p, name
		}
	}
	if !g.socketSet && prof != nil && prof.Socket != "" {
		out.socket = prof.Socket
	}
	var err error
	switch {
	case g.token != "":
		out.token, err = checkToken(g.token, "--token")
	case g.tokenFile != "":
		out.token, err = readTokenFile(g.tokenFile, "token file", stdin)
	case g.tokenEnv != "":
		out.token, err = checkToken(g.tokenEnv, "$COFFER_TOKEN")
	case g.tokenFileEnv != "":
		out.token, err = readTokenFile(g.tokenFileEnv, "token file", stdin)
	case prof != nil && prof.TokenFile != "" && !g.noToken:
		out.token, err = readTokenFile(prof.TokenFile, "token file", stdin)
		if err != nil {
			err = fmt.Errorf("profile %s: %w", out.profile, err)
		}
	}
	if err != nil {
		return conn{}, err
	}
	return out, nil
}

// newClient returns the client for the daemon chosen by --socket, --token,
// --token-file, --profile and the config file.
func newClient(c *cli.Context) (*client.Client, error) {
	return dial(c, globalsOf(c))
}

// newClientNoToken is newClient for commands that bring their own
// credentials (login, token, introspect): no bearer token is read or sent.
func newClientNoToken(c *cli.Context) (*client.Client, error) {
	g := globalsOf(c)
	g.noToken = true
	return dial(c, g)
}

func dial(c *cli.Context, g globals) (*client.Client, error) {
	path, err := configPath()
	if err != nil {
		if g.profile != "" {
			return nil, err
		}
		path = "" // no home: there is no config file to read
	}
	cn, err := resolveConn(g, path, c.App.Reader)
	if err != nil {
		return nil, err
	}
	cl := client.NewClient(cn.socket)
	if g.vsock != "" {
		cid, port, err := parseVsockAddr(g.vsock)
		if err != nil {
			return nil, err
		}
		cl = client.NewVsockClient(cid, port)
	}
	if cn.token != "" {
		cl = cl.WithToken(cn.token)
	}
	return cl, nil
}

// maxTokenRead bounds a token file; a JWT is about a kilobyte.
const maxTokenRead = 64 << 10

// readTokenFile reads a token from path ("-": stdin), trimming surrounding
// whitespace. Errors name the file (what: "token file", "client secret
// file"), never its content.
func readTokenFile(path, what string, stdin io.Reader) (string, error) {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("%s %s does not exist", what, path)
			}
			return "", fmt.Errorf("read %s: %w", what, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxTokenRead+1))
	if err != nil {
		return "", fmt.Errorf("read %s %s: %w", what, path, err)
	}
	defer clear(b)
	if len(b) > maxTokenRead {
		return "", fmt.Errorf("%s %s is larger than %d bytes: it does not hold a token", what, path, maxTokenRead)
	}
	name := what + " " + path
	if path == "-" {
		name = "standard input"
	}
	return checkToken(string(b), name)
}

// checkToken trims t and checks that it can go in an Authorization header.
// The message names where the token came from, never the token.
func checkToken(t, from string) (string, error) {
	t = strings.TrimSpace(t)
	if t == "" {
		return "", usagef("%s is empty", from)
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return "", usagef("%s does not hold a token: it has spaces, control or non-ASCII characters", from)
		}
	}
	return t, nil
}

// parseVsockAddr parses CID:PORT, e.g. 2:9999 (the host, from a guest).
func parseVsockAddr(s string) (cid, port uint32, err error) {
	c, p, ok := strings.Cut(s, ":")
	ci, err1 := strconv.ParseUint(c, 10, 32)
	pi, err2 := strconv.ParseUint(p, 10, 32)
	if !ok || err1 != nil || err2 != nil || pi == 0 {
		return 0, 0, usagef("--vsock takes CID:PORT, e.g. 2:9999 for the host, not %q", s)
	}
	return uint32(ci), uint32(pi), nil
}

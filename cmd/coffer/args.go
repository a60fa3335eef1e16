package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed lets flags follow positional arguments, as in
// `coffer secret rotate ID --payload-file FILE`: urfave/cli v2 stops reading
// flags at the first positional argument, so the leaf command's flags are
// moved in front of its positional arguments. Everything after "--" stays
// positional.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	flags, cmds := app.Flags, app.Commands
	i := 1
	// Walk global flags and command names down to the leaf command.
	for i < len(args) {
		a := args[i]
		if a == "--" {
			return args
		}
		if isFlag(a) {
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		cmd := findCommand(cmds, a)
		if cmd == nil {
			return args // unknown command: let cli report it as given
		}
		out = append(out, a)
		i++
		flags = cmd.Flags
		if len(cmd.Subcommands) == 0 {
			break
		}
		cmds = cmd.Subcommands
	}
	var global, fl, pos []string
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i:]...)
			i = len(args)
		case isFlag(a):
			// A global flag given after the command (coffer secret get ID
			// -o json) moves up to where the app reads it.
			dst, set := &fl, flags
			if !hasFlag(flags, a) && hasFlag(app.Flags, a) {
				dst, set = &global, app.Flags
			}
			*dst = append(*dst, a)
			if takesValue(set, a) && i+1 < len(args) {
				*dst = append(*dst, args[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	res := append([]string{out[0]}, global...)
	res = append(res, out[1:]...)
	return append(append(res, fl...), pos...)
}

func hasFlag(flags []cli.Flag, arg string) bool { return lookupFlag(flags, arg) != nil }

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether the flag in arg (like --name, -n or
// --name=value) needs the next argument as its value.
func takesValue(flags []cli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	f := lookupFlag(flags, arg)
	_, isBool := f.(*cli.BoolFlag)
	return f != nil && !isBool
}

// lookupFlag finds the flag named by arg (--name, -n or --name=value).
func lookupFlag(flags []cli.Flag, arg string) cli.Flag {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

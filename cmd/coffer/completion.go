package main

import (
	"io"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask coffer itself for the candidates: urfave/cli
// answers when the last argument is --generate-bash-completion.
const bashCompletion = `# bash completion for coffer; load with: source <(coffer completion bash)
_coffer_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    words+=("$cur")
  fi
  local opts
  opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _coffer_complete coffer
`

const zshCompletion = `#compdef coffer
# zsh completion for coffer; load with: source <(coffer completion zsh)
# or save it as _coffer in a directory of your $fpath.
_coffer() {
  local -a opts
  local cur=${words[CURRENT]}
  local -a args=(${words[1,CURRENT-1]})
  if [[ "$cur" == -* ]]; then
    args+=("$cur")
  fi
  opts=("${(@f)$(${args[@]} --generate-bash-completion 2>/dev/null)}")
  if [[ -n "${opts[1]}" ]]; then
    compadd -a opts
  else
    _files
  fi
}
if [[ "${funcstack[1]}" == "_coffer" ]]; then
  _coffer "$@"
else
  compdef _coffer coffer
fi
`

var completionCommand = &cli.Command{
	Name:      "completion",
	Usage:     "print a shell completion script: bash, zsh or fish",
	ArgsUsage: "bash|zsh|fish",
	Description: `Prints a completion script for the shell. For example:
   source <(coffer completion bash)        # in ~/.bashrc
   source <(coffer completion zsh)         # in ~/.zshrc
   coffer completion fish > ~/.config/fish/completions/coffer.fish`,
	Action: func(c *cli.Context) error {
		shell, err := oneArg(c, "a shell: bash, zsh or fish")
		if err != nil {
			return err
		}
		w := c.App.Writer
		switch shell {
		case "bash":
			_, err = io.WriteString(w, bashCompletion)
		case "zsh":
			_, err = io.WriteString(w, zshCompletion)
		case "fish":
			var s string
			if s, err = c.App.ToFishCompletion(); err == nil {
				_, err = io.WriteString(w, s)
			}
		default:
			return usagef("unknown shell %q: use bash, zsh or fish", shell)
		}
		return err
	},
}

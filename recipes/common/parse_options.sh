# Kaldi-style option parsing: `--foo-bar VALUE` sets the shell variable foo_bar,
# which must already be defined by the calling script (so a typo is an error).
# Arguments after `--` (or any non-option) are left in "$@" for the caller.
# --help lists the variables assigned in $option_files (the defaults files; default "$0").
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      # one line per option, in order of first definition, with its current value and the
      # last comment given with it (a corpus's conf.sh overrides the shared defaults)
      echo "options (current values):"
      declare -A _notes=()
      _names=()
      # shellcheck disable=SC2086  # a list of files
      while IFS= read -r line; do
        name=${line%%=*} rest=${line#*=}
        [ -n "${_notes[$name]+x}" ] || { _names+=("$name"); _notes[$name]=""; }
        case $rest in *" #"*) _notes[$name]="  ${rest#*# }" ;; esac
      done < <(grep -hE '^[a-z_][a-z0-9_]*=' ${option_files:-"$0"})
      for name in "${_names[@]}"; do
        echo "  --${name//_/-} \"${!name}\"${_notes[$name]}"
      done
      exit 0 ;;
    --)
      shift; break ;;
    --*=*)
      name="${1%%=*}"; name="${name#--}"; name="${name//-/_}"; value="${1#*=}"
      if [ -z "${!name+x}" ]; then echo "$0: unknown option --${name//_/-}" >&2; exit 1; fi
      printf -v "$name" '%s' "$value"; shift ;;
    --*)
      name="${1#--}"; name="${name//-/_}"
      if [ -z "${!name+x}" ]; then echo "$0: unknown option $1" >&2; exit 1; fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "$name" '%s' "$2"; shift 2 ;;
    *)
      break ;;
  esac
done

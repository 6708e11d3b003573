# Kaldi-style option parsing: `--foo-bar VALUE` sets the shell variable foo_bar,
# which must already be defined by the calling script (so a typo is an error).
# Arguments after `--` (or any non-option) are left in "$@" for the caller.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "options (current values):"
      grep -E '^[a-z_]+=' "$0" | sed 's/^/  --/; s/_/-/g; s/=/ (default: /; s/$/)/'
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

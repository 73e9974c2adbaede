# Sourced by test.sh and setup.sh: the test tiers (DESIGN.md) that `--tier N` options ask
# for, repeatable or comma lists (`--tier 1,2 --tier 4`).

# tiers_parse ARG...: TIERS gets the tiers asked for (sorted, once each; empty without
# --tier, which means every tier), REST the other arguments in their order.
tiers_parse() {
  TIERS=()
  REST=()
  local words=() parts=() word
  while [ $# -gt 0 ]; do
    case $1 in
      --tier)
        if [ $# -lt 2 ]; then
          echo "--tier needs a tier (1-7)" >&2
          return 2
        fi
        words+=("$2")
        shift 2 ;;
      --tier=*)
        words+=("${1#--tier=}")
        shift ;;
      *)
        REST+=("$1")
        shift ;;
    esac
  done
  [ ${#words[@]} -gt 0 ] || return 0
  IFS=', ' read -r -a parts <<< "${words[*]}"
  for word in "${parts[@]}"; do
    case $word in
      [1-7]) TIERS+=("$word") ;;
      *) echo "--tier: '$word' is not a tier (1-7)" >&2
         return 2 ;;
    esac
  done
  if [ ${#TIERS[@]} -eq 0 ]; then
    echo "--tier needs a tier (1-7)" >&2
    return 2
  fi
  mapfile -t TIERS < <(printf '%s\n' "${TIERS[@]}" | sort -u)
}

# tier_wanted N...: whether any of these tiers is to run (every tier is without --tier).
tier_wanted() {
  local want have
  [ ${#TIERS[@]} -gt 0 ] || return 0
  for want in "$@"; do
    for have in "${TIERS[@]}"; do
      [ "$want" != "$have" ] || return 0
    done
  done
  return 1
}

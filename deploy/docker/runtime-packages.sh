#!/usr/bin/env bash
# Prints the Debian packages that own the shared libraries a binary loads,
# one per line, so that a runtime image installs exactly those.
#
#   deploy/docker/runtime-packages.sh build/bin/dgrid-denoiser [more binaries]
#
# Fails if a library is missing or owned by no package, except:
#   RUNTIME_PACKAGES_SKIP="/opt/libtorch/"         libraries under these prefixes
#                                                  (copied into the image by hand)
#   RUNTIME_PACKAGES_ALLOW_MISSING="libcuda.so.1"  sonames that may be missing
#                                                  (the NVIDIA runtime mounts the driver)
set -euo pipefail
read -r -a skip <<< "${RUNTIME_PACKAGES_SKIP:-}"
allow_missing=" ${RUNTIME_PACKAGES_ALLOW_MISSING:-} "
status=0
declare -A libs=()  # resolved library path -> path as ldd printed it
for bin in "$@"; do
  if [ ! -f "$bin" ]; then
    echo "runtime-packages: no such file: $bin" >&2
    exit 1
  fi
  out=$(ldd "$bin")
  for soname in $(awk '/not found/ {print $1}' <<< "$out"); do
    if [[ "$allow_missing" != *" $soname "* ]]; then
      echo "runtime-packages: $bin: $soname not found" >&2
      status=1
    fi
  done
  for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<< "$out"); do
    real=$(readlink -f "$lib")
    for prefix in "${skip[@]}"; do
      [[ "$real" == "$prefix"* ]] && continue 2
    done
    libs[$real]=$lib
  done
done

# One dpkg -S call per spelling: Debian 12 merged /usr, but dpkg records some
# files under /lib, and some by the symlink's name rather than the target's.
declare -A owner=()
lookup() {  # lookup PATH... : records owners of the paths dpkg knows
  [ $# -gt 0 ] || return 0
  while IFS= read -r line; do
    case "$line" in diversion*|*"no path found"*) continue ;; esac
    local pkgs=${line%%: /*} path=/${line#*: /}
    owner[$path]=${pkgs%%[:,]*}
  done < <(dpkg -S "$@" 2>/dev/null || true)
}
reals=("${!libs[@]}")
lookup "${reals[@]}"
declare -A found=()
for real in "${reals[@]}"; do
  for candidate in "$real" "${real#/usr}" "${libs[$real]}" "${libs[$real]#/usr}"; do
    if [ -n "${owner[$candidate]:-}" ]; then found[$real]=${owner[$candidate]}; break; fi
  done
done
for round in 1 2 3; do
  missing=()
  for real in "${reals[@]}"; do
    [ -n "${found[$real]:-}" ] && continue
    case $round in
      1) missing+=("${real#/usr}") ;;
      2) missing+=("${libs[$real]}") ;;
      3) missing+=("${libs[$real]#/usr}") ;;
    esac
  done
  [ ${#missing[@]} -gt 0 ] || break
  lookup "${missing[@]}"
  for real in "${reals[@]}"; do
    [ -n "${found[$real]:-}" ] && continue
    for candidate in "${real#/usr}" "${libs[$real]}" "${libs[$real]#/usr}"; do
      if [ -n "${owner[$candidate]:-}" ]; then found[$real]=${owner[$candidate]}; break; fi
    done
  done
done
for real in "${reals[@]}"; do
  if [ -z "${found[$real]:-}" ]; then
    echo "runtime-packages: no package owns ${libs[$real]} ($real)" >&2
    status=1
  fi
done
[ ${#found[@]} -eq 0 ] || printf '%s\n' "${found[@]}" | sort -u
exit $status

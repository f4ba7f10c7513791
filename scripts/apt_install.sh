# Sourced by the install scripts: `apt_install WHAT PACKAGE...` installs Debian packages with apt-get when run as
# root; otherwise it prints the command to run and exits 1, so `make setup` never half-succeeds.
apt_install() {
  local what="$1"
  shift
  local cmd="apt-get update && apt-get install -y --no-install-recommends $*"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $what missing; install as root: sudo sh -c '$cmd'" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive sh -c "$cmd"
}

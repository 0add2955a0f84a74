# Sourced by the scripts that run the project's binaries in the VM (vm-test, bench-ipvs,
# bench-ipvs-instructions, calibrate-vm): what each needs to know of the host, found one way.
# Run from the checkout's root, after `set -euo pipefail`.

# The cargo target directory (CARGO_TARGET_DIR or the workspace's), as an absolute path.
vm_target_dir() {
    cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' \
        | sed 's/^"target_directory":"//; s/"$//'
}

# vm_shares ROOT TARGET-DIR: fills the array `shares` with run-in-vm's --share arguments for the
# checkout and, when it lies outside it, the target directory.
vm_shares() {
    shares=(--share "$1")
    case $2 in "$1"/*) ;; *) shares+=(--share "$2") ;; esac
}

# The host CPU's model name, for the reports' environment line.
host_cpu() {
    grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'
}

# Helpers of the canned scripts (/etc/hestia/*.sh), sourced.

# Announces a command line, runs it (pipes allowed) and prints its exit status.
run() {
    echo "hestia-script: \$ $*"
    bash -c "$*"
    echo "hestia-script: exit status $?"
}

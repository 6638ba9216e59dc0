# Sourced by the benchmarks: the floor every system figure is compared with.
#
#   bare_tools_ms DIR URL...   prints the milliseconds a plain loop of `fanficfare` and
#                              `calibredb add` takes over the URLs, one after the other, into a
#                              fresh library in DIR/library
bare_tools_ms() {
    local dir=$1
    shift
    mkdir -p "$dir/jail"
    calibredb --with-library "$dir/library" list >/dev/null
    local start
    start=$(date +%s%N)
    for url in "$@"; do
        (cd "$dir/jail" && fanficfare --non-interactive -o output_filename=story.epub -- "$url" >/dev/null 2>&1)
        calibredb --with-library "$dir/library" add --duplicates -- "$dir/jail/story.epub" >/dev/null 2>&1
        rm -f "$dir/jail/story.epub"
    done
    echo $((($(date +%s%N) - start) / 1000000))
}

#!/bin/sh
# Writes corpus.txt (next to this script): seven books of the King James Version, one verse per
# line, verse references stripped, in Bible order. Needs Debian's bible-kjv package
# (apt-get install bible-kjv; 4.38 was used). `bible -f` turns pretty-printing off, which
# prints one verse per line as "Ge1:1 In the beginning ...".
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# Genesis, Ruth, Esther, Jonah, Proverbs, Mark, John: each range ends at the book's last verse.
bible -f "gen1:1-50:26" "ruth1:1-4:22" "esther1:1-10:3" "jonah1:1-4:11" \
         "prov1:1-31:31" "mark1:1-16:20" "john1:1-21:25" > "$tmp"
# "Ge1:1 text" -> "text"; drop anything that is not a verse line.
sed -n -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ (.*)$/\1/p' "$tmp" > corpus.txt
wc -lc corpus.txt

# Sourced by the bench/*.sh scripts: timing helpers shared by every benchmark.

# Wall milliseconds of "$@" (its output discarded).
timed() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}

# The median of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

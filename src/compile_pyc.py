# Compile Python sources to unchecked-hash .pyc for the Lambda task root.
#
# Run by ocilambda with an interpreter of exactly the target version:
#   python compile_pyc.py MAJOR.MINOR OUT_ROOT DEST_ROOT < lines "REL<TAB>SOURCE"
# Each SOURCE is compiled to the __pycache__ of OUT_ROOT/REL, with the embedded source
# path DEST_ROOT/REL (where Lambda will see it). Unchecked-hash .pyc stay valid
# whatever the file mtimes (ours are normalised) and /var/task is read-only at run time.
import importlib.util
import os
import py_compile
import sys

expected, out_root, dest_root = sys.argv[1:4]
actual = "%d.%d" % sys.version_info[:2]
if actual != expected:
    sys.stderr.write("interpreter is Python %s, expected %s\n" % (actual, expected))
    sys.exit(3)
if sys.flags.hash_randomization:
    sys.stderr.write("string hashing is randomised: PYTHONHASHSEED=0 did not reach the compiler\n")
    sys.exit(4)
if not sys.flags.no_site:
    sys.stderr.write("site was imported: -S did not reach the compiler\n")
    sys.exit(5)
print("%d.%d.%d" % sys.version_info[:3])
sys.stdout.flush()

mode = py_compile.PycInvalidationMode.UNCHECKED_HASH


def compile_one(job):
    rel, source = job
    out = os.path.join(out_root, rel)
    cfile = importlib.util.cache_from_source(out)
    try:
        py_compile.compile(
            source,
            cfile=cfile,
            dfile=dest_root.rstrip("/") + "/" + rel,
            doraise=True,
            invalidation_mode=mode,
        )
    except py_compile.PyCompileError:
        # Like pip and uv: files that do not compile (Python 2 leftovers, templates)
        # are shipped as source only.
        return 0
    except (OSError, RecursionError, ValueError) as e:
        # Anything else is the environment's fault (a path too long or too deep, a full
        # disk): report it in one line naming the file, never as a traceback.
        raise Failure("%s: %s: %s" % (rel, type(e).__name__, e)) from None
    return 1


class Failure(Exception):
    pass


def compile_all(rels):
    if len(rels) > 200 and (os.cpu_count() or 1) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork explicitly: this script runs from `-c`, which spawn/forkserver cannot re-import.
        with ProcessPoolExecutor(mp_context=multiprocessing.get_context("fork")) as pool:
            return sum(pool.map(compile_one, rels, chunksize=64))
    return sum(compile_one(r) for r in rels)


rels = [tuple(line.rstrip("\n").split("\t", 1)) for line in sys.stdin if line.strip()]
try:
    print(compile_all(rels))
except Failure as e:
    sys.stderr.write("cannot compile %s\n" % e)
    sys.exit(5)

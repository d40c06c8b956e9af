#!/usr/bin/env python3
"""Deterministic data for the Pinot table `e2e` (see e2e/pinot/schema.json).

Row i in [0, N):
  id       = i                      (LONG)
  i_int    = i % 1000               (INT)
  l_long   = i * 7                  (LONG)
  d_double = i / 4.0                (DOUBLE, exact in binary)
  s_string = 'name-' + str(i % 100) (STRING)
  tags     = ['t' + str(i % 3), 't' + str(i % 5)]   (STRING multi-value; both kept, even if equal)
  x_long   = i * 13                 (LONG; widens each row so a full scan moves over 100 MiB)

Rows are split into FILES contiguous CSV files (one Pinot segment each): file k holds
i in [k*N//FILES, (k+1)*N//FILES).

Usage: gen_data.py N FILES OUTDIR EXPECTED_FILE
Writes OUTDIR/part-k.csv and EXPECTED_FILE (KEY=VALUE lines, sourceable by bash).
"""
import os
import sys


def main():
    n, files, outdir, expected = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.makedirs(outdir, exist_ok=True)
    for k in range(files):
        lo, hi = k * n // files, (k + 1) * n // files
        with open(os.path.join(outdir, "part-%d.csv" % k), "w") as f:
            f.write("id,i_int,l_long,d_double,s_string,tags,x_long\n")
            f.writelines(
                "%d,%d,%d,%r,name-%d,t%d;t%d,%d\n" % (i, i % 1000, i * 7, i / 4.0, i % 100, i % 3, i % 5, i * 13)
                for i in range(lo, hi)
            )
    # Aggregate facts, computed in closed form (checked against small N by brute force in selftest).
    facts = {
        "E2E_ROWS": n,
        "E2E_SEGMENTS": files,
        "E2E_SUM_ID": n * (n - 1) // 2,
        "E2E_SUM_L_LONG": 7 * n * (n - 1) // 2,
        "E2E_SUM_X_LONG": 13 * n * (n - 1) // 2,
        "E2E_SUM_I_INT": sum_mod(n, 1000),
        "E2E_MAX_L_LONG": 7 * (n - 1),
        "E2E_MIN_L_LONG": 0,
        "E2E_SUM_D_DOUBLE": repr(n * (n - 1) / 8.0),
        "E2E_MAX_D_DOUBLE": repr((n - 1) / 4.0),
        "E2E_DISTINCT_S_STRING": min(n, 100),
        # rows with s_string = 'name-0' (i % 100 == 0) and with tags containing 't0'
        "E2E_COUNT_NAME_0": count_mod(n, 100, 0),
        "E2E_COUNT_NAME_99": count_mod(n, 100, 99),
        # i%3==0 or i%5==0
        "E2E_COUNT_TAG_T0": count_mod(n, 3, 0) + count_mod(n, 5, 0) - count_mod(n, 15, 0),
        "E2E_COUNT_TAG_T4": count_mod(n, 5, 4),
        "E2E_COUNT_I_INT_LT_10": sum(count_mod(n, 1000, r) for r in range(10)),
    }
    with open(expected, "w") as f:
        for key, val in facts.items():
            f.write("%s=%s\n" % (key, val))


def count_mod(n, m, r):
    """How many i in [0, n) have i % m == r."""
    return (n - r + m - 1) // m if n > r else 0


def sum_mod(n, m):
    """sum(i % m for i in range(n))."""
    full, rest = divmod(n, m)
    return full * m * (m - 1) // 2 + rest * (rest - 1) // 2


if __name__ == "__main__":
    if sys.argv[1:2] == ["selftest"]:
        for n in (0, 1, 7, 99, 100, 101, 1234, 15001):
            rows = range(n)
            assert sum_mod(n, 1000) == sum(i % 1000 for i in rows)
            assert count_mod(n, 100, 99) == sum(1 for i in rows if i % 100 == 99)
            assert count_mod(n, 3, 0) + count_mod(n, 5, 0) - count_mod(n, 15, 0) == sum(
                1 for i in rows if i % 3 == 0 or i % 5 == 0)
        print("selftest ok")
    else:
        main()

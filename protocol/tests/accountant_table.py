# Regenerates the reference table in protocol/tests/accountant.rs with Google's dp-accounting:
#   python3 -m venv /tmp/dp && /tmp/dp/bin/pip install dp-accounting==0.6.0
#   /tmp/dp/bin/python protocol/tests/accountant_table.py 2>/dev/null | sed -E 's/np\.float64\(([^)]*)\)/\1/'
# (Not part of the build or the tests: the table is data.)
import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as rdp
cases = []
for q in [0.001, 0.01, 0.05, 0.2, 1.0]:
    for sigma in [0.6, 1.0, 1.5, 4.0]:
        for steps in [1, 100, 10000]:
            for delta in [1e-5]:
                cases.append((q, sigma, steps, delta))
# A few with other deltas and DP-SGD-like settings.
cases += [(256/60000, 1.1, 60*235, 1e-5), (0.004, 1.3, 10000, 1e-6), (0.1, 0.8, 50, 1e-3), (0.02, 2.0, 3000, 1e-5), (0.5, 5.0, 20, 1e-5)]
print("// q, noise multiplier, steps, delta, epsilon (dp-accounting %s, RdpAccountant, default orders)" % dp_accounting.__version__ if hasattr(dp_accounting,'__version__') else "")
for q, s, n, d in cases:
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), n)
    eps, order = acc.get_epsilon_and_optimal_order(d)
    print(f"    ({q!r}, {s!r}, {n}, {d!r}, {eps!r}),  // order {order}")

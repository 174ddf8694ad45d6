"""MIA-efficacy: native torch RBF-SVC vs scikit-learn SVC on the same features.

    python -m benchmarks.mia_speed --sizes 2000 10000 20000 [--out results/mia_speed.json]

For each size n: n member (retain) and n non-member (test) true-class confidences shaped like a
trained classifier's, plus n/2 forget rows; reports both solvers' wall time, the speed-up and the
fraction of identical member/non-member decisions on the forget rows.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit, sync
from lightning_unlearn.metrics._svc import fit_rbf_svc
from lightning_unlearn.metrics.functional import mia_efficacy


def features(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    members = 1 - torch.distributions.Beta(1.0, 30.0).sample((n,))
    nonmembers = 1 - torch.distributions.Beta(1.0, 6.0).sample((n,))
    forget = 1 - torch.distributions.Beta(1.0, 12.0).sample((n // 2,))
    return members, nonmembers, forget


def run(sizes: list[int], device: str) -> tuple[dict, str]:
    from sklearn.svm import SVC

    torch.manual_seed(0)
    rows = []
    for n in sizes:
        retain, test, forget = (t.to(device) for t in features(n))
        mia_efficacy(retain, test, forget)  # warm-up
        sync()
        t0 = time.perf_counter()
        native = float(mia_efficacy(retain, test, forget))
        sync()
        t_native = time.perf_counter() - t0
        x = torch.cat([retain, test]).double().cpu().numpy()[:, None]
        y = torch.cat([torch.ones(n), torch.zeros(n)]).numpy()
        t0 = time.perf_counter()
        svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
        sk_pred = svc.predict(forget.double().cpu().numpy()[:, None])
        t_sk = time.perf_counter() - t0
        model = fit_rbf_svc(torch.cat([retain, test])[:, None], torch.cat([torch.ones(n), torch.zeros(n)]).to(device))
        same = float((model.predict(forget[:, None]).cpu().numpy() == sk_pred).mean())
        rows.append(
            dict(
                n=n,
                native_s=t_native,
                sklearn_s=t_sk,
                speedup=t_sk / t_native,
                identical=same,
                efficacy_native=native,
                efficacy_sklearn=float((sk_pred == 0).mean()),
            )
        )
    table = "| members + non-members | native (s) | sklearn SVC (s) | speed-up | identical decisions |\n|---|---|---|---|---|\n"
    table += "\n".join(
        f"| {2 * r['n']:,} | {r['native_s']:.3f} | {r['sklearn_s']:.2f} | {r['speedup']:.0f}× | {100 * r['identical']:.2f} % |"
        for r in rows
    )
    return {"rows": rows}, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 20000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result, table = run(args.sizes, args.device)
    emit("mia_speed", result, table, args.out)


if __name__ == "__main__":
    main()

"""``python faulty_run.py MODE fedml-prr-args...``: the fedml-prr CLI with one extra algorithm that
misbehaves on purpose in silo 1, for the distributed failure tests (real processes, real MPI).

MODE ``raise``: silo 1 raises during its second training step.
MODE ``nan``: silo 1 uploads a model with a NaN weight at its second training step.
"""

import sys

from fedml_prr.algorithms import register_algorithm
from fedml_prr.algorithms.fedavg import FedAvgClient
from fedml_prr.config.algorithms import FedAvgParams
from fedml_prr.algorithms.single_model import AveragingServer
from fedml_prr.cli import main

MODE = sys.argv.pop(1)


class FaultyClient(FedAvgClient):
    def local_step(self, info):
        if self.ctx.silo == 1 and info.step == 2 and MODE == "raise":
            raise RuntimeError("deliberate failure in silo 1")
        super().local_step(info)

    def payload(self, info):
        out = super().payload(info)
        if self.ctx.silo == 1 and info.step == 2 and MODE == "nan":
            out["state"] = dict(out["state"])
            key = next(k for k, v in out["state"].items() if v.is_floating_point())
            out["state"][key] = out["state"][key].clone().fill_(float("nan"))
        return out


register_algorithm("Faulty", client=FaultyClient, server=AveragingServer, params=FedAvgParams,
                   summary="FedAvg whose silo 1 fails on purpose (tests)")

if __name__ == "__main__":
    sys.exit(main())

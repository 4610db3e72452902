"""Run a whole cross-silo federation over gRPC on this machine (one server + K client processes).

    python run_scripts/run_grpc_federation.py --cf configs/prr_derm_synthetic.yaml [--overwrite]

Each party is an ordinary `fedml-prr run --role server|client --rank R` process; on K+1 machines
start those commands yourself with a shared grpc_ipconfig_path (see docs/distributed.md).
"""

import sys

from fedml_prr.cli.launchers import grpc_federation_main

if __name__ == "__main__":
    sys.exit(grpc_federation_main())

"""FedML's standard main script, unchanged: run it with this plugin installed.

    fedml-prr exec run_scripts/fedml_main.py --cf configs/prr_derm_synthetic.yaml
    mpirun -np 5 python -m fedml_prr exec run_scripts/fedml_main.py --cf CONFIG   # backend: MPI

(or add ``import fedml_prr; fedml_prr.install()`` at the top of your own script).
"""

import fedml
from fedml import FedMLRunner

if __name__ == "__main__":
    # init FedML framework
    args = fedml.init()

    # init device
    device = fedml.device.get_device(args)

    # load data
    dataset, output_dim = fedml.data.load(args)

    # load model
    model = fedml.model.create(args, output_dim)

    # start training
    fedml_runner = FedMLRunner(args, device, dataset, model)
    fedml_runner.run()

"""FedML is initialised with no network attempt at all."""

import subprocess
import sys
import textwrap


def test_fedml_init_makes_no_network_attempt(tmp_path):
    script = textwrap.dedent("""
        import socket
        attempts = []
        class Refuse(Exception):
            pass
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise Refuse(f"network attempt: {args!r}")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        socket.gethostbyname = refuse

        from fedml_prr.fedml_adapter import fedml_args, init_fedml_offline
        args = init_fedml_offline(fedml_args({"training_type": "simulation", "backend": "sp", "random_seed": 3,
                                               "client_num_in_total": 2, "client_num_per_round": 2}))
        assert args.random_seed == 3 and args.enable_wandb is False
        assert attempts == [], attempts
        print("OFFLINE-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OFFLINE-OK" in proc.stdout

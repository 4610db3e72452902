"""Cross-silo between hospitals, with real processes and real mutual TLS on loopback (and, where the
test may create them, in network namespaces): each party holds only its own data, attacks on a
running server are refused with a log line naming the peer, and nothing of them is aggregated."""

import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import yaml

from fedml_prr.data.federation import Federation
from fedml_prr.fedml_adapter.grpc_link import METHOD, SERVICE
from fedml_prr.fedml_adapter.wire import HEARTBEAT, HELLO, UPLOAD, encode_message, make
from fedml_prr.runtime.launch import launch_grpc_federation
from fedml_prr.runtime.parties import read_grpc_ipconfig
from fedml_prr.runtime.provision import Kit, provision

from fedtiny import tiny_federation, write_image_folder
from test_distributed import HARD_TIMEOUT, records, single_process, subprocess_env

CLIENTS = ("A", "B", "C")


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory):
    """The tiny 3-client federation as one image folder (for the one-process reference) and as one
    folder per hospital holding only that hospital's images."""
    root = tmp_path_factory.mktemp("hospitals")
    federation = tiny_federation()
    write_image_folder(root / "all", federation)
    own = {}
    for client in federation.clients:
        own[client.name] = write_image_folder(root / f"only_{client.name}",
                                              Federation("one", federation.class_names, (client,)))
    return root, own, federation.class_names


def write_config(folder: Path, data_root: Path, class_names, *, algorithm="PRR", rounds=2, epochs=2) -> Path:
    doc = {
        "common_args": {"training_type": "simulation", "random_seed": 0},
        "data_args": {"dataset": "image_folder"},
        "model_args": {"model": "vgg16_slim"},
        "train_args": {"federated_optimizer": algorithm, "comm_round": rounds, "epochs": epochs, "batch_size": 8,
                       "learning_rate": 0.05},
        "prr_args": {"prr_data_root": str(data_root), "prr_image_size": 32, "prr_model_options": {"width": 0.25},
                     "prr_cpa_init_rounds": 1, "prr_eval_batch_size": 64, "prr_threads": 1,
                     "prr_clients": list(CLIENTS), "prr_class_names": list(class_names),
                     "prr_max_message_mb": 4, "prr_results_dir": str(folder / "sp")},
    }
    path = folder / f"{algorithm}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def deliver(address: str, data: bytes, *, kit=None, ca=None, name="fedml-prr-rank-0"):
    """One raw call of the parties' gRPC method; the status code it ended with (OK or the refusal)."""
    if kit is None and ca is None:
        channel = grpc.insecure_channel(address)
    else:
        ca = ca or kit.ca
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(),
                                                   private_key=kit.key.read_bytes() if kit else None,
                                                   certificate_chain=kit.cert.read_bytes() if kit else None)
        channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", name)])
    try:
        channel.unary_unary(f"/{SERVICE}/{METHOD}")(data, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


class Evil:
    """Unpickling this creates a file: the proof that bytes from the network were executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def server_serves(results_dir: Path) -> bool:
    """Whether the server answers a heartbeat from client rank 1's kit (harmless: it only notes rank 1 alive)."""
    book, kit = results_dir / "grpc_ipconfig.csv", results_dir / "tls" / "client1"
    if not (book.exists() and (kit / "key.pem").exists()):
        return False
    server = read_grpc_ipconfig(str(book))[0].address
    return deliver(server, encode_message(make(HEARTBEAT, 1, 0)), kit=Kit(1, kit), ca=kit / "ca.pem") == grpc.StatusCode.OK


def attack(results_dir: Path, marker: Path, outsider_kit) -> dict:
    """Every refusal case of the issue against the running server; the status code of each."""
    kits = {r: results_dir / "tls" / name for r, name in enumerate(["server", "client1", "client2", "client3"])}
    book = read_grpc_ipconfig(str(results_dir / "grpc_ipconfig.csv"))
    server = book[0].address
    silo0 = Kit(1, kits[1])  # client rank 1's own kit: a hospital's certificate
    ca = kits[0] / "ca.pem"
    upload = {"silo": 0, "step": 1, "num_samples": 24}
    return {
        "no certificate": deliver(server, b"x", ca=ca),
        "another CA": deliver(server, b"x", kit=outsider_kit, ca=ca),
        "rank 1 claiming rank 2": deliver(server, encode_message(make(UPLOAD, 2, 0, dict(upload, silo=1))), kit=silo0),
        "pickle": deliver(server, pickle.dumps(Evil(marker)), kit=silo0),
        "oversized": deliver(server, b"\0" * (5 << 20), kit=silo0),
        "unknown field": deliver(server, encode_message(make(UPLOAD, 1, 0, dict(upload, evil=1))), kit=silo0),
        "plain TCP": deliver(server, encode_message(make(HELLO, 1, 0, {"rank": 1}))),
    }


def test_hospitals_with_only_their_own_data_over_mutual_tls_match_one_process_and_refuse_attacks(tmp_path, hospitals):
    root, own, class_names = hospitals
    config_file = write_config(tmp_path, root / "all", class_names, rounds=4)
    single_process(config_file, tmp_path / "sp")
    results_dir = tmp_path / "grpc"
    marker = tmp_path / "pwned.txt"
    outsider = provision(tmp_path / "outsider", ["server", "A"])[1]  # a certificate from another federation's CA
    party_settings = {0: [f"prr_data_root={tmp_path / 'nothing-here'}"]}  # the server holds no data
    party_settings.update({r: [f"prr_data_root={own[name]}"] for r, name in enumerate(CLIENTS, start=1)})
    outcome = {}
    federation = threading.Thread(target=lambda: outcome.update(run=launch_grpc_federation(
        str(config_file), num_clients=3, results_dir=str(results_dir), party_settings=party_settings,
        timeout=HARD_TIMEOUT)))
    federation.start()
    deadline = time.monotonic() + HARD_TIMEOUT
    while not server_serves(results_dir):
        assert federation.is_alive() and time.monotonic() < deadline, "the federation never started"
        time.sleep(0.1)
    codes = attack(results_dir, marker, outsider)
    federation.join(timeout=HARD_TIMEOUT)
    run = outcome["run"]
    logs = {r: run.log(r) for r in range(4)}
    assert run.returncode == 0 and run.failed_rank is None, logs

    assert codes["no certificate"] == codes["another CA"] == grpc.StatusCode.UNAVAILABLE  # no TLS session at all
    assert codes["rank 1 claiming rank 2"] == grpc.StatusCode.PERMISSION_DENIED
    assert codes["pickle"] == codes["unknown field"] == grpc.StatusCode.INVALID_ARGUMENT
    assert codes["oversized"] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert codes["plain TCP"] == grpc.StatusCode.UNAVAILABLE
    assert not marker.exists()  # nothing from the network was unpickled
    log = logs[0]
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log  # gRPC's TLS layer refuses before any of our code runs
    assert "certificate signature failure" in log
    peer = "client rank 1 (silo 0) at ipv4:127.0.0.1"
    assert f"refused: {peer}" in log and "sent a message claiming to come from rank 2" in log
    assert "sent bytes that are not a fedml_prr message: not a fedml_prr message (wrong magic bytes)" in log
    assert f"sent {5 << 20} bytes, more than the limit of {4 << 20}" in log
    assert "upload client rank 1 (silo 0) at ipv4:127.0.0.1" in log
    assert "has field(s) ['evil'] that the protocol does not allow" in log

    # nothing of the attacks was aggregated, and every hospital trained on a folder holding only its own
    # images (the server on none): the same metrics as one process holding all of them
    assert records(results_dir) == records(tmp_path / "sp")
    assert not (tmp_path / "nothing-here").exists()


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["ip", "netns", "add", "fedml-prr-probe"], capture_output=True)
    subprocess.run(["ip", "netns", "del", "fedml-prr-probe"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns` to put each party in its own namespace")
def test_a_federation_whose_parties_sit_in_separate_network_namespaces(tmp_path, hospitals):
    root, own, class_names = hospitals
    config_file = write_config(tmp_path, root / "all", class_names, algorithm="FedAvg")
    single_process(config_file, tmp_path / "sp")
    suffix = str(os.getpid())[-5:]
    names = [f"fp{suffix}n{r}" for r in range(4)]
    bridge = f"fp{suffix}br"
    addresses = [f"198.18.0.{10 + r}" for r in range(4)]

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("link", "set", bridge, "up")
        for r, ns in enumerate(names):
            ip("netns", "add", ns)
            ip("link", "add", f"{ns}h", "type", "veth", "peer", "name", f"{ns}p")
            ip("link", "set", f"{ns}p", "netns", ns)
            ip("link", "set", f"{ns}h", "master", bridge)
            ip("link", "set", f"{ns}h", "up")
            ip("netns", "exec", ns, "ip", "addr", "add", f"{addresses[r]}/24", "dev", f"{ns}p")
            ip("netns", "exec", ns, "ip", "link", "set", f"{ns}p", "up")
            ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        book = tmp_path / "ipconfig.csv"
        book.write_text("eid,rank,grpc_server_ip,grpc_server_port\n"
                        + "".join(f"{r},{r},{addresses[r]},{21000 + r}\n" for r in range(4)))
        kits = provision(tmp_path / "tls", ["server", *CLIENTS])
        results_dir = tmp_path / "grpc"
        processes = {}
        for r, ns in enumerate(names):
            role = ["--role", "server"] if r == 0 else ["--role", "client", "--rank", str(r)]
            data = tmp_path / "nothing-here" if r == 0 else own[CLIENTS[r - 1]]
            command = ["ip", "netns", "exec", ns, sys.executable, "-m", "fedml_prr", "run", "--cf", str(config_file),
                       "--no-progress", "--set", "backend=GRPC", "--set", f"grpc_ipconfig_path={book}",
                       "--set", f"prr_results_dir={results_dir}", "--set", f"prr_data_root={data}",
                       "--set", f"prr_tls_cert={kits[r].cert}", "--set", f"prr_tls_key={kits[r].key}",
                       "--set", f"prr_tls_ca={kits[r].ca}", *role]
            log = (tmp_path / f"rank{r}.log").open("w")
            processes[r] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
        for r, p in processes.items():
            assert p.wait(timeout=HARD_TIMEOUT) == 0, (tmp_path / f"rank{r}.log").read_text()
        assert records(results_dir) == records(tmp_path / "sp")
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_the_launcher_names_the_party_that_failed_first(tmp_path, hospitals):
    """Client rank 2 is killed; the server stops later (fail-fast): the launcher blames rank 2."""
    root, own, class_names = hospitals
    config_file = write_config(tmp_path, root / "all", class_names, algorithm="FedAvg", rounds=30, epochs=1)
    results_dir = tmp_path / "grpc"
    outcome = {}
    federation = threading.Thread(target=lambda: outcome.update(run=launch_grpc_federation(
        str(config_file), num_clients=3, results_dir=str(results_dir), timeout=HARD_TIMEOUT,
        settings=["prr_dropout=fail", "prr_heartbeat_timeout_s=3"])))
    federation.start()
    deadline = time.monotonic() + HARD_TIMEOUT
    while not (results_dir / "checkpoints" / "last" / "B.pt").exists():
        assert federation.is_alive() and time.monotonic() < deadline, "round 0 never completed"
        time.sleep(0.05)
    found = subprocess.run(["pgrep", "-f", f"prr_results_dir={results_dir} .*--rank 2"], capture_output=True,
                           text=True).stdout.split()
    assert len(found) == 1, found
    os.kill(int(found[0]), 9)
    federation.join(timeout=HARD_TIMEOUT)
    run = outcome["run"]
    assert run.failed_rank == 2 and run.exit_codes[2] == -9 and run.returncode != 0, run.exit_codes
    assert "client rank 2 (silo 1)" in run.log(0) and "prr_dropout: fail" in run.log(0)

#!/usr/bin/python3
"""What grpcurl relies on, with server reflection alone (ctest grpc_reflection).

Against a live orchestrator (one dgrid-denoiser on DGRID_TEST_MODEL, default
the shipped models/fashion-mnist), using only the grpc.reflection.v1alpha
stubs generated from Debian's grpc-proto and no dgrid stubs, it does what
these do:

    grpcurl -plaintext 127.0.0.1:50050 list
    grpcurl -plaintext 127.0.0.1:50050 describe dgrid.v1.Orchestrator
    grpcurl -plaintext -d '{"prompt": "...", ...}' 127.0.0.1:50050 dgrid.v1.Orchestrator/CreateGrid
    grpcurl -plaintext -d '{"prompt": "...", ...}' 127.0.0.1:50050 dgrid.v1.Orchestrator/StreamGrid

1. list the services;
2. fetch the file descriptors of dgrid.v1.Orchestrator (file_containing_symbol,
   then every dependency by file name) into a fresh DescriptorPool;
3. build a CreateGrid request from JSON text into a dynamic message class;
4. call CreateGrid (and StreamGrid) through generic channel methods with the
   dynamic classes, and check the grid.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from live_stack import LiveStack, stop_on_sigterm
from pngcheck import png_info

ORCHESTRATOR = "dgrid.v1.Orchestrator"
EXPECTED_SERVICES = {ORCHESTRATOR, "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"}
CALL_TIMEOUT = 300.0
MAX_MESSAGE_BYTES = 64 << 20

failures: List[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    if not ok:
        failures.append(what)


class Reflection:
    """One ServerReflectionInfo stream, request by request (as grpcurl does)."""

    def __init__(self, channel: grpc.Channel, timeout: float = 60.0) -> None:
        self._requests: "queue.Queue[Optional[Any]]" = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self._call = stub.ServerReflectionInfo(self._iterate(), timeout=timeout)

    def _iterate(self) -> Iterator[Any]:
        while True:
            r = self._requests.get()
            if r is None:
                return
            yield r

    def ask(self, **kw: Any) -> Any:
        self._requests.put(reflection_pb2.ServerReflectionRequest(**kw))
        response = next(self._call)
        if response.HasField("error_response"):
            e = response.error_response
            raise RuntimeError(f"reflection error {e.error_code}: {e.error_message} for {kw}")
        return response

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()

    def list_services(self) -> List[str]:
        r = self.ask(list_services="")
        return [s.name for s in r.list_services_response.service]

    def files_for_symbol(self, symbol: str) -> Dict[str, descriptor_pb2.FileDescriptorProto]:
        """Every file needed for symbol: its file and, transitively, their imports."""
        files: Dict[str, descriptor_pb2.FileDescriptorProto] = {}

        def add(response: Any) -> None:
            for raw in response.file_descriptor_response.file_descriptor_proto:
                f = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files.setdefault(f.name, f)

        add(self.ask(file_containing_symbol=symbol))
        while True:
            missing = sorted({d for f in files.values() for d in f.dependency} - set(files))
            if not missing:
                return files
            for name in missing:
                add(self.ask(file_by_filename=name))


def build_pool(files: Dict[str, descriptor_pb2.FileDescriptorProto]) -> descriptor_pool.DescriptorPool:
    """A fresh pool (not the default one), files added after their imports."""
    pool = descriptor_pool.DescriptorPool()
    added: set = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.AddSerializedFile(files[name].SerializeToString())
        added.add(name)

    for name in sorted(files):
        add(name)
    return pool


def message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> Any:
    descriptor = pool.FindMessageTypeByName(full_name)
    get = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get is not None:
        return get(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def describe_service(files: Dict[str, descriptor_pb2.FileDescriptorProto], service: str) -> Dict[str, Any]:
    """grpcurl describe: the service's methods, from the descriptor protos."""
    package, _, name = service.rpartition(".")
    for f in files.values():
        if f.package != package:
            continue
        for s in f.service:
            if s.name == name:
                print(f"{service} is a service:")
                print(f"service {s.name} {{")
                for m in s.method:
                    cs = "stream " if m.client_streaming else ""
                    ss = "stream " if m.server_streaming else ""
                    print(f"  rpc {m.name} ( {cs}{m.input_type.lstrip('.')} ) "
                          f"returns ( {ss}{m.output_type.lstrip('.')} );")
                print("}")
                return {m.name: m for m in s.method}
    raise KeyError(service)


def describe_message(pool: descriptor_pool.DescriptorPool, full_name: str) -> None:
    d = pool.FindMessageTypeByName(full_name)
    print(f"{full_name} is a message:")
    print(f"message {d.name} {{")
    labels = {1: "", 2: "required ", 3: "repeated "}
    for f in d.fields:
        t = f.message_type.full_name if f.message_type else (
            f.enum_type.full_name if f.enum_type else descriptor_pb2.FieldDescriptorProto.Type.Name(
                f.type).replace("TYPE_", "").lower())
        print(f"  {labels.get(f.label, '')}{t} {f.name} = {f.number};")
    print("}")


def main() -> int:
    stop_on_sigterm()
    # "Reflection alone": the generated dgrid stubs must not even be importable.
    check(importlib.util.find_spec("dgrid") is None, "the dgrid stubs are not on the path")

    with LiveStack() as stack:
        target = stack.orchestrator
        print(f"orchestrator {target}, model {stack.model}", flush=True)
        channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
            reflection = Reflection(channel)
            try:
                # 1. grpcurl list
                print("$ grpcurl -plaintext ADDR list")
                services = reflection.list_services()
                for s in services:
                    print(s)
                check(EXPECTED_SERVICES <= set(services),
                      f"list has {sorted(EXPECTED_SERVICES)}")

                # 2. descriptors for the Orchestrator, following imports
                files = reflection.files_for_symbol(ORCHESTRATOR)
            finally:
                reflection.close()
            # grpc 1.51's C++ server repeats, in each answer on a stream, the
            # files it sent before on that stream; clients (grpcurl too) merge
            # by name. So resolve the other services on a second stream.
            reflection = Reflection(channel)
            try:
                for s in services:  # describe works for every listed service
                    reflection.files_for_symbol(s)
                check(True, "every listed service resolves to its files")
            finally:
                reflection.close()
            print("files: " + ", ".join(sorted(files)))
            check({"dgrid/v1/orchestrator.proto", "dgrid/v1/denoiser.proto",
                   "google/protobuf/wrappers.proto"} <= set(files),
                  "the Orchestrator's file and its imports (wrappers.proto too)")
            pool = build_pool(files)

            print(f"$ grpcurl -plaintext ADDR describe {ORCHESTRATOR}")
            methods = describe_service(files, ORCHESTRATOR)
            check(methods["CreateGrid"].input_type == ".dgrid.v1.GridRequest"
                  and methods["CreateGrid"].output_type == ".dgrid.v1.Grid"
                  and not methods["CreateGrid"].server_streaming,
                  "CreateGrid(GridRequest) returns (Grid)")
            check(methods["StreamGrid"].server_streaming
                  and methods["StreamGrid"].output_type == ".dgrid.v1.GridEvent",
                  "StreamGrid(GridRequest) returns (stream GridEvent)")
            print("$ grpcurl -plaintext ADDR describe dgrid.v1.GridRequest")
            describe_message(pool, "dgrid.v1.GridRequest")

            def cls(method: str, which: str) -> Any:
                return message_class(pool, getattr(methods[method], which).lstrip("."))

            def unary(method: str) -> Callable[..., Any]:
                return channel.unary_unary(
                    f"/{ORCHESTRATOR}/{method}",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=cls(method, "output_type").FromString)

            # A prompt of the served model, asked for dynamically too.
            listed = unary("ListModels")(json_format.Parse("{}", cls("ListModels", "input_type")()),
                                         timeout=60)
            models = json.loads(json_format.MessageToJson(listed))["models"]
            prompt = (models[0].get("prompts") or [""])[0]
            print(f"model {models[0]['name']}, prompt '{prompt}'")

            # 3. a CreateGrid request from JSON (wrapper fields as plain numbers)
            body = json.dumps({"prompt": prompt, "seed": 7, "steps": 10,
                               "branch_steps": [0, 5], "branches": 2, "eta": 1.0})
            print(f"$ grpcurl -plaintext -d '{body}' ADDR {ORCHESTRATOR}/CreateGrid")
            request = json_format.Parse(body, cls("CreateGrid", "input_type")())
            check(request.steps.value == 10 and list(request.branch_steps) == [0, 5]
                  and request.branches.value == 2, "the request parsed from JSON")

            # 4. CreateGrid through a generic method with the dynamic classes
            grid = unary("CreateGrid")(request, timeout=CALL_TIMEOUT)
            check(grid.DESCRIPTOR.full_name == "dgrid.v1.Grid", "a dgrid.v1.Grid came back")
            check(len(grid.rows) == 2 and all(len(r.cells) == 2 for r in grid.rows),
                  "2 rows x 2 cells")
            check(grid.png[:8] == b"\x89PNG\r\n\x1a\n", "the grid's png has the PNG magic")
            w, h, _ = png_info(bytes(grid.png))
            check(w > 0 and h > 0, f"the grid png decodes ({w}x{h})")
            check(all(c.png[:4] == b"\x89PNG" for r in grid.rows for c in r.cells),
                  "every cell has a png")
            summary = json.loads(json_format.MessageToJson(grid))
            print(f"grid: modelEvals={summary.get('modelEvals')} rows="
                  f"{[(r.get('branchStep', 0), round(r.get('divergence', 0), 3)) for r in summary['rows']]}")

            # And StreamGrid: plan first, cells, the grid last.
            print(f"$ grpcurl -plaintext -d '{{...seed 8...}}' ADDR {ORCHESTRATOR}/StreamGrid")
            stream = channel.unary_stream(
                f"/{ORCHESTRATOR}/StreamGrid",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=cls("StreamGrid", "output_type").FromString)
            request.seed = 8
            kinds = [e.WhichOneof("event") for e in stream(request, timeout=CALL_TIMEOUT)]
            print("events: " + " ".join(kinds))
            check(kinds[0] == "plan" and kinds[-1] == "grid" and kinds.count("cell") == 5,
                  "StreamGrid: plan, 5 cells (4 branches + trunk), then the grid")
        finally:
            channel.close()

    print(f"grpc_reflection: {'FAILED' if failures else 'PASSED'}"
          + (f": {len(failures)} checks failed: {failures}" if failures else ""), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a readable last line for ctest
        import traceback
        traceback.print_exc()
        print(f"grpc_reflection: FAILED: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)

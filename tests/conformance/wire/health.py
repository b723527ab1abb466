"""The standard health service as a third-party client sees it (grpcio-health-checking), for
scenarios/wire.json: `python health.py ADDR` checks the server-wide and QueueService statuses
(SERVING), the first message of Watch, and NOT_FOUND for an unknown service; prints one line
per check and exits 0 when all hold."""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

QUEUE_SERVICE = "jobwire.v1.QueueService"
SERVING = health_pb2.HealthCheckResponse.SERVING


def name(status: int) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def main(addr: str) -> int:
    ok = True
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", QUEUE_SERVICE):
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            print(f"Check({service!r}) = {name(status)}")
            ok &= status == SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=QUEUE_SERVICE), timeout=10)
        first = next(watch).status  # Watch sends the current status first
        watch.cancel()
        print(f"Watch({QUEUE_SERVICE!r}) first = {name(first)}")
        ok &= first == SERVING
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            print("Check('no.such.Service') answered instead of NOT_FOUND")
            ok = False
        except grpc.RpcError as e:
            print(f"Check('no.such.Service') -> {e.code().name}")
            ok &= e.code() == grpc.StatusCode.NOT_FOUND
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

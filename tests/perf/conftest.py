import pytest


@pytest.fixture(scope="session")
def perf_device(request):
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def perf_dtype(request):
    return request.config.getoption("--dtype")

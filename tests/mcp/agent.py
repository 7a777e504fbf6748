"""Drives `codesearch mcp` with the official MCP SDK for Python, as an agent would.

Run by tests/it/mcp.rs with the venv that scripts/fetch-test-corpora.sh makes:

    python agent.py SCENARIO

Environment (set by the Rust test):
    CODESEARCH_TEST_BIN      the `codesearch` binary
    CODESEARCH_TEST_ALONE    a copy of `codesearch` with no `codesearchd` beside it
    CODESEARCH_TEST_CORPUS   a real corpus folder
    CODESEARCH_TEST_QUERY    a query whose answer is known
    CODESEARCH_TEST_EXPECT   the repository-relative path that answers it
    CODESEARCH_HOME          the daemon's home (a temp folder)

Prints `ok - …` per check; exits non-zero on the first failure.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

BIN = os.environ["CODESEARCH_TEST_BIN"]
CORPUS = os.environ["CODESEARCH_TEST_CORPUS"]
QUERY = os.environ["CODESEARCH_TEST_QUERY"]
EXPECT = os.environ["CODESEARCH_TEST_EXPECT"]
HOME = os.environ["CODESEARCH_HOME"]
SOCKET = os.path.join(HOME, "codesearchd.sock")


def ok(what):
    print(f"ok - {what}", flush=True)


def check(cond, what, detail=""):
    if not cond:
        raise AssertionError(f"not ok - {what}\n{detail}")
    ok(what)


def server(binary=BIN, cwd=CORPUS, path=None):
    env = {
        "CODESEARCH_HOME": HOME,
        "CODESEARCH_EMBEDDING_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "PATH": path if path is not None else os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
    }
    for var in ("HF_HOME", "HF_HUB_CACHE"):
        if var in os.environ:
            env[var] = os.environ[var]
    return StdioServerParameters(command=binary, args=["mcp"], env=env, cwd=cwd)


def text(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def call(session, tool, args=None, timeout=300):
    return await asyncio.wait_for(session.call_tool(tool, args or {}), timeout)


async def wait_ready(session, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(text(await call(session, "status")))
        repo = next((r for r in status["repos"] if r["path"] == os.path.realpath(CORPUS)), None)
        if repo and repo["state"] == "ready":
            return status
        if repo and repo["state"] == "error":
            raise AssertionError(f"not ok - indexing failed: {repo['error']}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not ok - the corpus was not indexed in {timeout} s: {status}")
        await asyncio.sleep(0.5)


async def basics():
    async with stdio_client(server()) as (read, write):
        async with ClientSession(read, write) as session:
            started = time.monotonic()
            init = await asyncio.wait_for(session.initialize(), 10)
            took = time.monotonic() - started
            check(init.server_info.name == "codesearch", "initialize names the server")
            check(took < 5, f"initialize answers at once ({took:.2f} s)")
            tools = {t.name: t for t in (await session.list_tools()).tools}
            check({"search", "index", "status", "definition"} <= set(tools), f"tools/list: {sorted(tools)}")
            props = tools["search"].input_schema["properties"]
            check(
                {"query", "k", "repos", "languages", "paths", "mode", "max_tokens"} <= set(props),
                "search's schema has its arguments",
                json.dumps(props),
            )
            check(tools["search"].input_schema.get("required") == ["query"], "only query is required")
            check(len(tools["search"].description) > 100, "search is described for a model")
            check(not os.path.exists(SOCKET), "initialize and tools/list start no daemon and index nothing")

            # No argument: the working directory (the corpus) is indexed.
            indexed = json.loads(text(await call(session, "index")))
            check(
                indexed["repository"]["path"] == os.path.realpath(CORPUS),
                "index with no path takes the working directory",
                json.dumps(indexed),
            )
            status = await wait_ready(session)
            check(status["working_directory_repo"] == os.path.realpath(CORPUS), "status names the working directory's repository")
            check(len(status["models"]) == 1, "one model loaded", json.dumps(status["models"]))

            # Default scope: the repository of the working directory.
            result = await call(session, "search", {"query": QUERY, "k": 5})
            body = text(result)
            check(not result.is_error, "search succeeds", body)
            first_file = next(l for l in body.splitlines() if l.startswith("/"))
            check(first_file.endswith("/" + EXPECT), f"the first file is {EXPECT}", body[:2000])
            check("@@ " in body, "hits come as whole definitions with line numbers")

            for budget in (300, 1000):
                result = await call(session, "search", {"query": QUERY, "k": 20, "max_tokens": budget, "repos": [CORPUS]})
                body = text(result)
                tokens = (len(body.encode()) + 2) // 3
                check(tokens <= budget, f"max_tokens {budget} is kept ({tokens} estimated tokens)")
                check("max_tokens" in body, f"what max_tokens {budget} left out is said", body[-400:])

            result = await call(session, "definition", {"name": "Wrap"})
            body = text(result)
            first_file = next((l for l in body.splitlines() if l.startswith("/")), "")
            check(not result.is_error and first_file.endswith("/errors.go") and "func Wrap(" in body,
                  "definition finds func Wrap in errors.go first", body[:1500])
            result = await call(session, "definition", {"name": "NoSuchThingAnywhere"})
            check(not result.is_error and "No definition" in text(result), "an unknown name is said in words", text(result))
            result = await call(session, "definition", {"name": "wrap an error"})
            check(result.is_error and "search" in text(result), "a sentence is sent to search", text(result))

            result = await call(session, "search", {"query": QUERY, "languages": ["cobol"]})
            check(not result.is_error and "No hits" in text(result), "no hits is said in words", text(result))

            # Bad arguments are tool errors (the MCP specification: input
            # validation errors go to the model, so it can correct itself).
            for bad, why, says in [
                ({"query": QUERY, "k": "ten"}, "k of the wrong type", "ten"),
                ({"query": QUERY, "k": 0}, "k out of range", "`k`"),
                ({"query": QUERY, "mode": "fuzzy"}, "a mode outside the enum", "fuzzy"),
                ({"query": QUERY, "colour": "red"}, "an unknown argument", "colour"),
                ({"k": 3}, "no query", "query"),
                ({"query": "   "}, "an empty query", "query"),
                ({"query": QUERY, "max_tokens": 5}, "a budget too small", "max_tokens"),
            ]:
                result = await call(session, "search", bad)
                check(result.is_error and says in text(result), f"{why} is a tool error saying so: {text(result)}")
            # A tool that does not exist is a protocol error.
            try:
                result = await call(session, "grep", {"query": QUERY})
            except MCPError as e:
                check(e.code in (-32601, -32602), f"an unknown tool is an MCP error ({e.code}: {e.message})")
            else:
                raise AssertionError(f"not ok - an unknown tool was answered: {result}")
            result = await call(session, "search", {"query": QUERY, "repos": ["/nonexistent/repo"]})
            check(result.is_error and "/nonexistent/repo" in text(result), "an unknown repository is a tool error naming it", text(result))
            result = await call(session, "search", {"query": QUERY})
            check(not result.is_error, "the bridge keeps serving after bad calls")


async def one_session(n):
    async with stdio_client(server()) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await call(session, "search", {"query": QUERY, "k": 3, "repos": [CORPUS]})
            check(EXPECT in text(result), f"session {n} finds {EXPECT}")
            return json.loads(text(await call(session, "status")))


async def sessions():
    statuses = await asyncio.gather(*(one_session(n) for n in range(4)))
    pids = {s["pid"] for s in statuses}
    check(len(pids) == 1, f"four sessions share one daemon (pids {pids})")
    check(all(len(s["models"]) == 1 for s in statuses), "and one model")
    procs = subprocess.run(["pgrep", "-f", f"codesearchd serve"], capture_output=True, text=True).stdout.split()
    mine = [p for p in procs if HOME in open(f"/proc/{p}/environ", "rb").read().decode(errors="replace")]
    check(len(mine) == 1, f"one codesearchd process for this home ({mine})")


async def restart():
    alone = os.environ["CODESEARCH_TEST_ALONE"]
    # No codesearchd on this PATH either.
    async with stdio_client(server(binary=alone, path="/usr/bin:/bin")) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await call(session, "search", {"query": QUERY, "repos": [CORPUS]})
            check(EXPECT in text(result), "the running daemon answers")
            subprocess.run([BIN, "daemon", "stop"], env={**os.environ}, check=True, capture_output=True)
            # This bridge has no codesearchd beside it or on PATH: it cannot
            # start one, and says so.
            result = await call(session, "search", {"query": QUERY, "repos": [CORPUS]})
            check(result.is_error and "codesearchd" in text(result), "a stopped daemon is a clear tool error", text(result))
            subprocess.run([BIN, "daemon", "start"], env={**os.environ}, check=True, capture_output=True)
            result = await call(session, "search", {"query": QUERY, "repos": [CORPUS]})
            check(not result.is_error and EXPECT in text(result), "the same session works once the daemon is back")
    # A bridge that can start the daemon does so by itself.
    subprocess.run([BIN, "daemon", "stop"], env={**os.environ}, check=True, capture_output=True)
    async with stdio_client(server()) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await call(session, "search", {"query": QUERY, "repos": [CORPUS]})
            check(not result.is_error and EXPECT in text(result), "a stopped daemon is started again by the bridge")


SCENARIOS = {"basics": basics, "sessions": sessions, "restart": restart}

if __name__ == "__main__":
    try:
        asyncio.run(SCENARIOS[sys.argv[1]]())
    except AssertionError as e:
        print(e, flush=True)
        sys.exit(1)

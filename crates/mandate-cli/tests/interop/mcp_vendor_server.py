"""A FastMCP server (the official Python SDK, PyPI `mcp`) with the tools of
the procurement case study. Every call that runs is counted in COUNTS (a JSON
file), so a test can prove a denied call never reached the server.

    python3 mcp_vendor_server.py COUNTS http PORT   # Streamable HTTP on 127.0.0.1:PORT/mcp
    python3 mcp_vendor_server.py COUNTS stdio       # stdio
"""

import asyncio
import json
import sys

from mcp.server.fastmcp import FastMCP

counts_file = sys.argv[1]
transport = sys.argv[2]
port = int(sys.argv[3]) if len(sys.argv) > 3 else 0


def count(tool):
    try:
        with open(counts_file) as f:
            counts = json.load(f)
    except (FileNotFoundError, ValueError):
        counts = {}
    counts[tool] = counts.get(tool, 0) + 1
    with open(counts_file, "w") as f:
        json.dump(counts, f)


server = FastMCP("vendors", host="127.0.0.1", port=port, log_level="WARNING")


@server.tool()
def search_vendors(category: str, region: str) -> list[str]:
    """Search the vendor portal."""
    count("search_vendors")
    return [f"{category}-vendor-1 ({region})", f"{category}-vendor-2 ({region})"]


@server.tool()
def delete_vendor(vendor_id: str) -> str:
    """Delete a vendor (never in the mandate)."""
    count("delete_vendor")
    return f"deleted {vendor_id}"


@server.tool()
def screen_entity(entity: str) -> str:
    """Sanctions screening: discovered during the mission, granted once."""
    count("screen_entity")
    return f"{entity}: clear"


@server.tool()
async def slow_report(category: str, region: str, seconds: float) -> str:
    """A long call, to be cancelled when the mandate ends."""
    count("slow_report")
    await asyncio.sleep(seconds)
    count("slow_report_finished")
    return "report"


if transport == "http":
    server.run(transport="streamable-http")
else:
    server.run(transport="stdio")

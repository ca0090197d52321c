"""Benchmarks: tasks, methods, the runner (local threads or Ray), metrics, reports and plots."""

from moot.bench.methods import MethodSettings, build_method
from moot.bench.metrics import compare, summarise
from moot.bench.records import BenchPlan, BenchRecord
from moot.bench.report import write_report
from moot.bench.runner import run_bench
from moot.bench.store import ResultStore
from moot.bench.tasks import Question, Task, arithmetic, load_jsonl

__all__ = [
    "BenchPlan",
    "BenchRecord",
    "MethodSettings",
    "Question",
    "ResultStore",
    "Task",
    "arithmetic",
    "build_method",
    "compare",
    "load_jsonl",
    "run_bench",
    "summarise",
    "write_report",
]

"""Measurements around the pipeline: the benchmark against the seed's procedure, the scaling
over processes, and the prepared GPU check.

May import anything in ddad but ddad.cli.
"""

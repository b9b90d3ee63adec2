"""A pairwise judge of open answers that is itself measured (issue 22, part 2; docs/judge.md).

The stage after a generate_open run: a judge model compares two voices' answers to the same
item, never seeing the voices, their groups or the audio; each voice gets a win share and a
Bradley-Terry strength, and the win share is an outcome of the report like any other. The
judge's own agreement with human labels, and its position bias, are measured on a labelled
set (`biasbench judge agreement`) and stated beside every judge-based result.

Modules: prompt (what the judge reads, how its verdict is parsed), design (which pairs are
compared: label-blind, both orders), store (judgements.sqlite: cache and resume), backend
(a judge from a model spec, and the simulated judges), scores (win shares, Bradley-Terry),
compare (`judge compare`), agreement (`judge agreement`), cli.
"""

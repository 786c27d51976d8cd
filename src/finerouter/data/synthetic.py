"""SYNTHETIC routing data with a planted task structure, for demos, tests and benchmarks.

Everything in this module is generated: the prompts are filled-in templates, the models are fictitious, the
scores and prices are random draws. Use it to check that a method recovers a structure we planted, never as
evidence about real LLMs.

The plant: ``n_domains`` coarse domains (``dataset.tasks``), each with ``subtasks_per_domain`` fine
sub-tasks (``dataset.meta["subtask"]``, also the prefix of each ``id``: ``"<domain>/<subtask>/<row>"``, so
it survives :meth:`RoutingDataset.subset`). Prompts of one domain share its opening phrases and topic
vocabulary; each sub-task has its own sentence templates, so sub-tasks read alike but not the same. Each
sub-task has its own skill profile over the models -- within a domain, every sub-task has a different best
model (while there are enough models), and any two sub-tasks' model rankings differ clearly -- so the coarse
domain label alone cannot tell which model wins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from finerouter._validation import check_float, check_int
from finerouter.data.dataset import RoutingDataset
from finerouter.encoders.base import l2_normalise
from finerouter.errors import DataError

# domain -> (opening phrases shared by the domain, {sub-task: sentence templates})
_DOMAINS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "mathematics": (
        ["Math question:", "Please solve this math exercise.", "Here is a math homework problem.", "Quick math check:"],
        {
            "algebra": [
                "Solve for x: {a}x + {b} = {c}.",
                "Factor the polynomial x^2 + {a}x + {b}.",
                "Simplify the algebraic expression ({a}x + {b})({a}x - {b}).",
                "Find the roots of the quadratic equation x^2 - {a}x + {b} = 0.",
            ],
            "geometry": [
                "Find the area of a triangle with base {a} cm and height {b} cm.",
                "What is the circumference of a circle with radius {a}?",
                "Compute the interior angles of a regular polygon with {a} sides.",
                "A rectangle has sides {a} and {b}; find the length of its diagonal.",
            ],
            "probability": [
                "Two dice are rolled; what is the probability that the sum is {a}?",
                "A bag has {a} red and {b} blue marbles; find the probability of drawing two red marbles.",
                "A coin is flipped {a} times; what is the probability of exactly {b} heads?",
                "What is the expected value of a lottery ticket costing {a} dollars with a 1 in {b} chance to win?",
            ],
            "calculus": [
                "Differentiate f(x) = x^{a} + {b}x.",
                "Compute the definite integral of {a}x^2 from 0 to {b}.",
                "Find the limit of ({a}x^2 + 1)/(x^2 + {b}) as x goes to infinity.",
                "Find the local maxima of f(x) = -x^3 + {a}x^2 + {b} using derivatives.",
            ],
        },
    ),
    "programming": (
        ["Coding question:", "I need help with some code.", "Programming task:", "Software question:"],
        {
            "python_debugging": [
                "My Python script raises a KeyError on line {a} when reading a dict; how do I fix it?",
                "Why does my Python loop over a list of {a} items skip elements when I remove items?",
                "Fix the IndentationError in my Python function that is {a} lines long.",
                "My Python class raises AttributeError: 'NoneType' object has no attribute 'append' after {a} calls.",
            ],
            "sql_queries": [
                "Write an SQL query that returns the top {a} customers by total order amount.",
                "Write a SQL JOIN between the orders and customers tables for orders above {a} dollars.",
                "Write an SQL GROUP BY query counting employees per department with more than {a} people.",
                "Write an SQL query to delete duplicate rows from a table with {a} columns.",
            ],
            "regular_expressions": [
                "Write a regular expression that matches phone numbers with {a} digits.",
                "Give me a regex that validates email addresses shorter than {a} characters.",
                "What regex pattern extracts dates in the format YYYY-MM-DD from a {a}-line log?",
                "Write a regular expression that matches hexadecimal color codes like #{a}{b}FF.",
            ],
            "algorithm_complexity": [
                "What is the time complexity of binary search on an array of {a} elements?",
                "Explain the Big-O complexity of merge sort versus quicksort for {a} items.",
                "Analyse the worst-case running time of a nested loop running {a} by {b} times.",
                "What is the space complexity of a recursive Fibonacci function computing F({a})?",
            ],
        },
    ),
    "science": (
        ["Science question:", "Explain this science topic.", "A question for my science class:", "Science quiz:"],
        {
            "chemistry": [
                "Balance the chemical equation for burning {a} moles of methane.",
                "What is the molar mass of a compound with {a} carbon atoms and {b} hydrogen atoms?",
                "Explain why the pH of a {a} molar acid solution is below 7.",
                "How many valence electrons does the element with atomic number {a} have?",
            ],
            "astronomy": [
                "How long does light take to reach us from a star {a} light years away?",
                "How were the {a} known moons of Jupiter discovered by astronomers?",
                "Explain how a star of {a} solar masses ends its life.",
                "What causes the phases of the Moon over a {a}-day cycle?",
            ],
            "genetics": [
                "In a cross of two heterozygous pea plants, what fraction of {a} offspring show the recessive trait?",
                "Explain how DNA replication copies a gene of {a} base pairs.",
                "What is the chance that two carrier parents have a child with a recessive genetic disorder?",
                "How does a mutation in a gene of {a} codons change the protein?",
            ],
            "mechanics": [
                "A ball is thrown upward at {a} m/s; how high does it go?",
                "A car of mass {a} kg accelerates at {b} m/s^2; what force acts on it?",
                "Compute the kinetic energy of a {a} kg object moving at {b} m/s.",
                "A pendulum is {a} meters long; what is its period?",
            ],
        },
    ),
    "history": (
        ["History question:", "A question about history:", "For my history essay:", "History quiz:"],
        {
            "ancient_rome": [
                "Why did the Roman Republic become an empire around {a} BC?",
                "Describe the role of the Roman Senate in the year {a} BC.",
                "How did Roman legions of {a} soldiers organise their camps?",
                "What caused the fall of the Western Roman Empire after {a} years of decline?",
            ],
            "world_war_ii": [
                "What happened at the Battle of Stalingrad during World War II in winter {a}?",
                "Explain why the D-Day landings in June 1944 involved {a} thousand soldiers.",
                "How did the attack on Pearl Harbor bring the United States into World War II?",
                "Describe the Blitz over London during {a} months of World War II.",
            ],
            "industrial_revolution": [
                "How did the steam engine change British factories around 17{a}0?",
                "Explain child labour in textile mills during the Industrial Revolution for children aged {a}.",
                "Why did railways expand across England after 18{a}0?",
                "How did the spinning jenny change cotton production during the Industrial Revolution?",
            ],
            "cold_war": [
                "What caused the Cuban Missile Crisis that lasted {a} days in 1962?",
                "Explain the building of the Berlin Wall and its {a} kilometres of fortifications.",
                "How did the space race between the USA and the Soviet Union shape the Cold War?",
                "Describe the nuclear arms race of the Cold War, with about {a} thousand warheads.",
            ],
        },
    ),
    "cooking": (
        ["Cooking question:", "Kitchen help needed:", "A question about cooking:", "Recipe question:"],
        {
            "baking": [
                "Why did my sourdough bread not rise after {a} hours of proofing?",
                "How long should I bake a sponge cake at {a} degrees?",
                "Can I replace butter with oil in a cookie recipe for {a} cookies?",
                "How do I make a flaky pie crust with {a} grams of flour?",
            ],
            "grilling": [
                "How long should I grill a steak {a} centimetres thick for medium rare?",
                "What temperature should a charcoal grill reach before cooking burgers for {a} people?",
                "How do I keep chicken from sticking to the barbecue grate?",
                "How long do I smoke a pork shoulder of {a} kilograms on the grill?",
            ],
            "fermentation": [
                "How do I ferment sauerkraut with {a} grams of salt per kilogram of cabbage?",
                "Why does my kombucha taste like vinegar after {a} days of fermentation?",
                "How do I start a kimchi ferment and how many days should it sit?",
                "What temperature is right for fermenting yogurt for {a} hours?",
            ],
            "knife_skills": [
                "How do I julienne a carrot into strips {a} millimetres wide?",
                "What is the safest way to dice an onion with a chef's knife?",
                "How often should I sharpen a kitchen knife that I use {a} times a week?",
                "How do I hold the knife when mincing {a} cloves of garlic?",
            ],
        },
    ),
    "writing": (
        ["Writing task:", "Please help me write something.", "A writing request:", "Text task:"],
        {
            "poetry": [
                "Write a short poem about the sea with {a} lines.",
                "Compose a haiku about autumn leaves and {a} crows.",
                "Write a rhyming poem of {a} stanzas about friendship.",
                "Write a sonnet about the city at night.",
            ],
            "email_drafting": [
                "Draft a polite email to my manager asking for {a} days of leave.",
                "Write a professional email following up on a job interview from {a} days ago.",
                "Draft an email to a client apologising for a delay of {a} weeks.",
                "Write an email inviting my team to a meeting at {a} pm.",
            ],
            "translation": [
                "Translate this sentence into French: 'I will arrive in {a} minutes.'",
                "Translate into Spanish: 'The train leaves at {a} o'clock.'",
                "How do you say 'I have {a} brothers' in German?",
                "Translate to Italian: 'We need {a} tickets for the museum.'",
            ],
            "summarisation": [
                "Summarise this article of {a} paragraphs about climate policy in three sentences.",
                "Give me a one-paragraph summary of a {a}-page report on quarterly sales.",
                "Summarise the main points of a {a}-minute podcast about productivity.",
                "Write a short summary of a research abstract of {a} words on sleep.",
            ],
        },
    ),
}

MAX_DOMAINS = len(_DOMAINS)
MAX_SUBTASKS_PER_DOMAIN = min(len(subs) for _, subs in _DOMAINS.values())
#: assumed output length (tokens) when turning the synthetic per-token prices into per-prompt costs
OUTPUT_TOKENS = 256


def planted_assignment(
    n_prompts: int, n_domains: int, subtasks_per_domain: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(domain (n,), subtask (n,))`` int64: sub-tasks of near-equal size, in shuffled order.

    Sub-task ``s`` belongs to domain ``s // subtasks_per_domain``.
    """
    n_sub = n_domains * subtasks_per_domain
    subtask = np.arange(n_prompts, dtype=np.int64) % n_sub
    rng.shuffle(subtask)
    return subtask // subtasks_per_domain, subtask


def planted_skills(
    n_domains: int,
    subtasks_per_domain: int,
    n_models: int,
    rng: np.random.Generator,
    *,
    max_rbo: float = 0.3,
    tries: int = 64,
) -> np.ndarray:
    """``(n_domains * subtasks_per_domain, n_models)`` expected score of each model on each sub-task.

    Each sub-task ranks the models by its own permutation onto fixed skill levels (0.85 for the best, 0.78
    for a close runner-up, then evenly from 0.62 down to 0.25). Within a domain the best models of the sub-tasks are
    distinct while ``subtasks_per_domain <= n_models``. The permutations are drawn so that any two sub-tasks'
    expected rankings have a chance-corrected RBO (``p = 0.9``) below ``max_rbo`` where ``tries`` random draws
    per sub-task allow it (else the draw closest to that): two sub-tasks with the same preferences would be
    *one* task for routing purposes, so a plant with such a pair could not be recovered by design.
    """
    from finerouter.discovery.ranking import order_to_ranks
    from finerouter.discovery.rbo import extrapolated_rbo, chance_corrected_rbo

    m = n_models
    levels = np.concatenate([[0.85, 0.78], np.linspace(0.62, 0.25, m - 2)]) if m > 2 else np.array([0.85, 0.7])
    n_sub = n_domains * subtasks_per_domain
    skills = np.empty((n_sub, m))
    accepted = np.zeros((0, m), dtype=np.int64)  # ranks of the accepted profiles
    for d in range(n_domains):
        tops = rng.choice(m, size=subtasks_per_domain, replace=subtasks_per_domain > m)
        for j, top in enumerate(tops):
            others = np.setdiff1d(np.arange(m), [top])
            orders = np.array([np.concatenate([[top], rng.permutation(others)]) for _ in range(tries)])
            cand_ranks = order_to_ranks(orders)
            if accepted.shape[0]:
                a = np.repeat(cand_ranks, accepted.shape[0], axis=0)
                b = np.tile(accepted, (tries, 1))
                worst = chance_corrected_rbo(extrapolated_rbo(a, b, 0.9), m).reshape(tries, -1).max(axis=1)
                ok = np.where(worst < max_rbo)[0]
                pick = int(ok[0]) if ok.size else int(np.argmin(worst))
            else:
                pick = 0
            skills[d * subtasks_per_domain + j, orders[pick]] = levels
            accepted = np.vstack([accepted, cand_ranks[pick]])
    return skills


def planted_scores(
    subtask: np.ndarray, skills: np.ndarray, rng: np.random.Generator, noise: float = 0.06
) -> np.ndarray:
    """``(n, m)`` scores in [0, 1]: sub-task skill + a per-prompt difficulty shift + per-cell noise, clipped."""
    n = subtask.size
    difficulty = rng.normal(0.0, 0.08, size=(n, 1))
    cell = rng.normal(0.0, noise, size=(n, skills.shape[1]))
    return np.clip(skills[subtask] + difficulty + cell, 0.0, 1.0)


def make_synthetic_routing_data(
    n_prompts: int = 1200,
    n_domains: int = 4,
    subtasks_per_domain: int = 3,
    n_models: int = 8,
    seed: int = 0,
    *,
    noise: float = 0.06,
    name: str = "synthetic",
) -> RoutingDataset:
    """Generate a SYNTHETIC routing dataset with planted coarse domains and fine sub-tasks.

    Args:
        n_prompts: number of prompts (split evenly over the sub-tasks).
        n_domains: coarse domains, at most 6 (mathematics, programming, science, history, cooking, writing).
        subtasks_per_domain: fine sub-tasks per domain, at most 4.
        n_models: fictitious models ``synth-model-00``...; at least 2.
        seed: makes the data reproducible.
        noise: standard deviation of the per-(prompt, model) score noise.
        name: the dataset name.

    Returns:
        A :class:`RoutingDataset` with ``tasks`` = domain names, ``meta["subtask"]`` = ``"domain/subtask"``
        per prompt (the planted truth; also the prefix of ``ids``), ``meta["skills"]`` the planted
        ``(n_subtasks, m)`` expected scores, ``meta["prices"]`` the per-model USD per 1M tokens and
        ``costs (n, m)`` = (input tokens ~ characters / 4 + 256 output tokens) x price.
    """
    owner = "make_synthetic_routing_data"
    n_prompts = check_int(n_prompts, "n_prompts", owner, low=2)
    n_domains = check_int(n_domains, "n_domains", owner, low=1, high=MAX_DOMAINS)
    subtasks_per_domain = check_int(
        subtasks_per_domain, "subtasks_per_domain", owner, low=1, high=MAX_SUBTASKS_PER_DOMAIN
    )
    n_models = check_int(n_models, "n_models", owner, low=2)
    seed = check_int(seed, "seed", owner, low=0)
    noise = check_float(noise, "noise", owner, low=0.0)
    rng = np.random.default_rng(seed)

    domain_names = list(_DOMAINS)[:n_domains]
    sub_names: list[tuple[str, str]] = []
    for dname in domain_names:
        for sname in list(_DOMAINS[dname][1])[:subtasks_per_domain]:
            sub_names.append((dname, sname))
    domain, subtask = planted_assignment(n_prompts, n_domains, subtasks_per_domain, rng)
    skills = planted_skills(n_domains, subtasks_per_domain, n_models, rng)
    scores = planted_scores(subtask, skills, rng, noise)

    prompts: list[str] = []
    for s in subtask:
        dname, sname = sub_names[s]
        openings, subs = _DOMAINS[dname]
        opening = openings[int(rng.integers(len(openings)))]
        template = subs[sname][int(rng.integers(len(subs[sname])))]
        a, b, c = (int(v) for v in rng.integers(2, 99, size=3))
        prompts.append(f"{opening} {template.format(a=a, b=b, c=c)}")

    models = [f"synth-model-{j:02d}" for j in range(n_models)]
    prices = np.exp(rng.uniform(math.log(0.1), math.log(15.0), size=n_models))
    tokens = np.array([len(p) / 4.0 + OUTPUT_TOKENS for p in prompts])
    costs = tokens[:, None] * prices[None, :] / 1e6

    labels = [f"{sub_names[s][0]}/{sub_names[s][1]}" for s in subtask]
    meta: dict[str, Any] = {
        "synthetic": True,
        "subtask": labels,
        "skills": skills.tolist(),
        "subtask_names": [f"{d}/{s}" for d, s in sub_names],
        "prices": {mname: float(p) for mname, p in zip(models, prices)},
        "seed": seed,
    }
    return RoutingDataset(
        prompts=prompts,
        models=models,
        scores=scores,
        costs=costs,
        tasks=[domain_names[d] for d in domain],
        ids=[f"{lab}/{i:06d}" for i, lab in enumerate(labels)],
        name=name,
        source=f"<synthetic seed={seed}>",
        meta=meta,
    )


def make_synthetic_embeddings(
    domain: np.ndarray,
    subtask: np.ndarray,
    dim: int = 384,
    seed: int = 0,
    *,
    domain_weight: float = 1.0,
    subtask_weight: float = 0.6,
    noise: float = 0.7,
) -> np.ndarray:
    """SYNTHETIC clustered embeddings: ``domain centre + subtask centre + noise``, L2-normalised.

    Centres and noise are isotropic Gaussian directions of unit expected norm, so (in high dimension) two
    prompts of one sub-task have cosine about ``(dw^2 + sw^2) / (dw^2 + sw^2 + noise^2)``, two prompts of one
    domain but different sub-tasks about ``dw^2 / (...)``, and prompts of different domains about 0.

    Args:
        domain: ``(n,)`` int domain of each prompt.
        subtask: ``(n,)`` int sub-task of each prompt (globally numbered).
        dim: embedding width.
        seed: makes the vectors reproducible.
        domain_weight, subtask_weight, noise: the three scales above.

    Returns:
        ``(n, dim)`` float32 with unit rows.
    """
    owner = "make_synthetic_embeddings"
    dim = check_int(dim, "dim", owner, low=2)
    domain = np.asarray(domain, dtype=np.int64)
    subtask = np.asarray(subtask, dtype=np.int64)
    if domain.shape != subtask.shape or domain.ndim != 1:
        raise DataError(
            f"{owner}: domain and subtask must be 1-D of equal length; got {domain.shape} and {subtask.shape}"
        )
    rng = np.random.default_rng(seed)
    scale = 1.0 / math.sqrt(dim)
    domain_centres = rng.standard_normal((int(domain.max()) + 1, dim)).astype(np.float32) * scale
    subtask_centres = rng.standard_normal((int(subtask.max()) + 1, dim)).astype(np.float32) * scale
    out = np.empty((domain.size, dim), dtype=np.float32)
    step = 65536  # bounded temporary memory at large n
    for lo in range(0, domain.size, step):
        hi = min(lo + step, domain.size)
        jitter = rng.standard_normal((hi - lo, dim), dtype=np.float32) * (noise * scale)
        out[lo:hi] = (
            domain_weight * domain_centres[domain[lo:hi]] + subtask_weight * subtask_centres[subtask[lo:hi]] + jitter
        )
    return l2_normalise(out)


def synthetic_truth(dataset: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
    """``(domain (n,), subtask (n,))`` int codes of a synthetic dataset, read from its ids (survives subsets)."""
    parts = [i.split("/") for i in dataset.ids or []]
    if len(parts) != dataset.n_prompts or any(len(p) != 3 for p in parts):
        raise DataError(f"{dataset.source}: not a synthetic dataset (ids are not 'domain/subtask/row')")
    domain_names = sorted({p[0] for p in parts})
    subtask_names = sorted({f"{p[0]}/{p[1]}" for p in parts})
    domain_code = {d: i for i, d in enumerate(domain_names)}
    subtask_code = {s: i for i, s in enumerate(subtask_names)}
    domain = np.array([domain_code[p[0]] for p in parts], dtype=np.int64)
    subtask = np.array([subtask_code[f"{p[0]}/{p[1]}"] for p in parts], dtype=np.int64)
    return domain, subtask

"""GRPO's rewards: step entropy's four terms on hand-made completions, their weighted sum, a
reward of the user's own, and bad terms named."""

import pytest

from jaxcot.config import ConfigError, from_dict
from jaxcot.rl.rewards import RewardSpec, chain_steps, score_rewards, step_entropy_rewards, with_grader

SKIPPED = "Start with 3.\n\n[SKIP]\n\n[SKIP]\n\n[SKIP]\n\n[SKIP]\n\nThe answer is 7."
HALF = "Start with 3.\n\n[SKIP]\n\n3 + 4 = 7.\n\n[SKIP]\n\nThe answer is 7."
PLAIN = "Start with 3.\n\n3 + 4 = 7.\n\nThe answer is 8."


def test_step_entropy_terms():
    records = [{"gold": "7", "completion_tokens": 20}, {"gold": "7", "completion_tokens": 20},
               {"gold": "7", "completion_tokens": 4000}]
    total, parts = score_rewards(with_grader(step_entropy_rewards(), "gsm8k"), ["q"] * 3, [SKIPPED, HALF, PLAIN],
                                 records)
    assert parts["correct"] == [1.0, 1.0, 0.0]
    assert parts["skip_share"] == [1.0, 0.5, 0.0]  # 4 of 5 steps (80%), 2 of 4 (50%), none
    assert parts["skip_count"] == [0.0, 0.0, 0.0] and parts["length"] == [0.0, 0.0, 1.0]
    assert total == [3.0, 2.5, -1.0]
    many = "\n\n".join(["[SKIP]"] * 101) + "\n\nThe answer is 7."
    _, parts = score_rewards(step_entropy_rewards(), ["q"], [many], [{"gold": "7", "completion_tokens": 300}])
    assert parts["skip_count"] == [1.0]


def test_steps_are_the_chain_before_the_answer():
    assert chain_steps(HALF) == ["Start with 3.", "[SKIP]", "3 + 4 = 7.", "[SKIP]"]
    assert chain_steps("The answer is 3.") == []


def test_format_and_a_math_grader():
    specs = [RewardSpec("format"), RewardSpec("correct", args={"grader": "math"})]
    recs = [{"gold": "\\frac{1}{2}", "finish_reason": "eos"}, {"gold": "\\frac{1}{2}", "finish_reason": "length"}]
    _, parts = score_rewards(with_grader(specs, "gsm8k"), ["q", "q"], ["So $\\boxed{0.5}$.", "It is 1/2"], recs)
    assert parts["format"] == [1.0, 0.0] and parts["correct"] == [1.0, 0.0]  # its own grader kept


def test_a_reward_of_ones_own_and_errors():
    spec = from_dict(RewardSpec, {"name": "test_grpo_rewards:count_sevens", "weight": 0.5})
    total, _ = score_rewards([spec], ["q", "q"], ["7 77", "none"], [{}, {}])
    assert total == [1.5, 0.0]
    with pytest.raises(ValueError, match="'test_grpo_rewards:one_value' returned 1 values for 2"):
        score_rewards([RewardSpec("test_grpo_rewards:one_value")], ["q", "q"], ["a", "b"], [{}, {}])
    with pytest.raises(ConfigError, match="name: must be one of"):
        from_dict(RewardSpec, {"name": "speed"})


def count_sevens(prompts, completions, records):
    return [float(c.count("7")) for c in completions]


def one_value(prompts, completions, records):
    return [1.0]


def test_questions_from_a_run_folder_keep_their_gold(tmp_path):
    """A run's data/train.jsonl carries the final answer as `gold` beside the testbed's answer
    sentence: GRPO's `correct` reward must grade against the number, not the sentence."""
    import json

    from jaxcot.data.questions import QuestionFields, load_questions

    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "q?", "answer": "The answer is 16.", "gold": "16"}) + "\n"
                    + json.dumps({"id": "b", "question": "r?", "answer": "He has 3.\n#### 3"}) + "\n")
    qs = load_questions(str(path), QuestionFields(split="train"))
    assert [q["gold"] for q in qs] == ["16", "3"]
    _, parts = score_rewards([RewardSpec("correct")], ["q?"], ["So 16.\nThe answer is 16."], qs[:1])
    assert parts["correct"] == [1.0]

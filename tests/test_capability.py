from agentflan.capability import source_family, tag_record, tag_turn


def test_tag_turn_rules():
    assert tag_turn("get_weather") == "retrieval"
    assert tag_turn("`AirbnbSearch.search_property_by_place`") == "retrieval"
    assert tag_turn('{"city": "Paris"}') == "understanding"
    assert tag_turn("{'city': 'Paris'}") == "understanding"
    assert tag_turn("I will call it.\n```python\nget_weather(city='Paris')\n```") == "understanding"
    assert tag_turn("I need the weather in Paris first.") == "reasoning"
    assert tag_turn("It is 18 degrees in Paris.") == "reasoning"


def test_tag_record_by_family():
    def rec(source):
        return {"id": "r", "source": source, "turns": [
            {"role": "user", "content": "q", "train": False, "capability": None},
            {"role": "assistant", "content": "get_weather", "train": True, "capability": None},
            {"role": "assistant", "content": "done", "train": False, "capability": None}]}
    chat = tag_record(rec("toolbench_tflan_60p_r10r5u7"))
    assert [t["capability"] for t in chat["turns"]] == [None, "retrieval", None]
    assert tag_record(rec("data_toolbench_instruct_j1s1_3k"))["turns"][1]["capability"] == "instruction"
    assert tag_record(rec("toolbench_react_10p"))["turns"][1]["capability"] is None
    assert source_family("data_toolbench_negative") == "negative"

import pytest

from runtime.channels import ALL_CONFIGS, CHANNEL_MEAN, ChannelConfig, configs_with, parse_channel_list
from runtime.errors import InvalidChannelsError


@pytest.mark.parametrize("text,name", [("rgb", "RGB"), ("RG", "RG"), ("r,g", "RG"), ("R, B", "RB"), ("g b", "GB"),
                                       ("b", "B"), (" R ", "R")])
def test_parse_is_case_and_separator_insensitive(text, name):
    assert ChannelConfig.parse(text).name == name


@pytest.mark.parametrize("bad", ["RR", "X", "BGR", "", "GR", "RGBA", "all"])
def test_parse_rejects_with_valid_names_listed(bad):
    with pytest.raises(InvalidChannelsError) as err:
        ChannelConfig.parse(bad)
    message = str(err.value)
    assert repr(bad) in message
    for name in ("RGB", "RG", "GB", "RB", "R", "G", "B"):
        assert name in message


def test_invalid_channels_error_is_a_value_error():
    with pytest.raises(ValueError):
        ChannelConfig.parse("Q")


def test_indices_follow_identity_not_position():
    assert ChannelConfig.parse("GB").indices == (1, 2)
    assert ChannelConfig.parse("RB").indices == (0, 2)
    # G is normalised as G whether it comes first (GB) or second (RG).
    assert ChannelConfig.parse("GB").mean[0] == ChannelConfig.parse("RG").mean[1] == CHANNEL_MEAN["G"]
    assert ChannelConfig.parse("RB").std == (ChannelConfig("R").std[0], ChannelConfig("B").std[0])


def test_two_channel_configs_are_distinct():
    two = configs_with(2)
    assert [c.name for c in two] == ["RG", "GB", "RB"]
    assert len({c.indices for c in two}) == 3


def test_parse_list():
    assert parse_channel_list("all") == list(ALL_CONFIGS)
    assert [c.name for c in parse_channel_list("RGB,R")] == ["RGB", "R"]
    assert [c.name for c in parse_channel_list("rg;b")] == ["RG", "B"]
    assert [c.name for c in parse_channel_list("R,G")] == ["RG"]  # one configuration, as ChannelConfig.parse reads it
    with pytest.raises(InvalidChannelsError):
        parse_channel_list("RGB,BGR")
    with pytest.raises(InvalidChannelsError):
        parse_channel_list("")

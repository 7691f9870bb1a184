#!/usr/bin/env python3

r"""
Views of word-level TracIn-WE influence: HTML in Captum's colours, terminal
text, figures, Captum ``VisualizationDataRecord`` records beside feature
attributions, and the side-by-side comparison of influence methods.
"""

from captum_tracin_we._views.attribution_views import (
    plot_attributions_side_by_side,
    summed_test_contributions,
    to_visualization_records,
    visualize_attributions_side_by_side,
)
from captum_tracin_we._views.comparison_views import (
    comparison_html,
    plot_influence_comparison,
)
from captum_tracin_we._views.text_view import format_word_influence_text
from captum_tracin_we._views.token_view import format_token_influence
from captum_tracin_we._views.word_figures import (
    plot_method_comparison,
    plot_pair_contributions,
    plot_word_contributions,
)
from captum_tracin_we._views.word_html import (
    STYLE,
    WordInfluenceHTML,
    visualize_side_by_side,
    visualize_word_influence,
    word_color,
)

__all__ = [
    "STYLE",
    "WordInfluenceHTML",
    "comparison_html",
    "format_token_influence",
    "format_word_influence_text",
    "plot_attributions_side_by_side",
    "plot_influence_comparison",
    "plot_method_comparison",
    "plot_pair_contributions",
    "plot_word_contributions",
    "summed_test_contributions",
    "to_visualization_records",
    "visualize_attributions_side_by_side",
    "visualize_side_by_side",
    "visualize_word_influence",
    "word_color",
]
